"""Start the operator: wire the API client, the energy source and kopf together."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import kopf
from kubernetes import client
from prometheus_client import start_http_server

from lepton.core.names import SCHEDULER_NAME
from lepton.kube import api_client as kube_api_client

from .admission import OperatorConfig
from .handlers import OperatorMemo, registry
from .kube import KubeApi
from .leader import DEFAULT_LEASE_NAME, DEFAULT_LEASE_SECONDS, LeaseElector
from .prometheus import DEFAULT_QUERY_TEMPLATE, PrometheusEnergySource


@dataclass(frozen=True)
class LeaderElection:
    """Where the replicas' Lease lives and how long it lasts."""

    namespace: str
    identity: str | None = None
    lease_name: str = DEFAULT_LEASE_NAME
    lease_seconds: int = DEFAULT_LEASE_SECONDS


class _Alive(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"standby\n")

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet


def _standby_liveness(endpoint: str) -> ThreadingHTTPServer:
    """Answer the liveness probe while this replica waits for the Lease (kopf serves it after)."""
    url = urlparse(endpoint)
    server = ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 8080), _Alive)
    threading.Thread(target=server.serve_forever, daemon=True, name="standby-liveness").start()
    return server


def run(
    kubeconfig: str | None = None,
    namespace: str | None = None,
    prometheus_url: str | None = None,
    *,
    scheduler_name: str = SCHEDULER_NAME,
    prometheus_query: str = DEFAULT_QUERY_TEMPLATE,
    verbose: bool = False,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
    liveness_endpoint: str | None = None,
    metrics_address: tuple[str, int] | None = None,
    leader_election: LeaderElection | None = None,
) -> None:
    """Run the operator until stopped (blocking). ``namespace=None`` watches all namespaces.

    ``liveness_endpoint`` (e.g. ``http://0.0.0.0:8080/healthz``) is kopf's probe endpoint;
    ``metrics_address`` (host, port) serves the budgets' gauges on ``/metrics``. With
    ``leader_election`` the replica first waits to hold the Lease (answering the liveness probe
    meanwhile), and stops the moment it can no longer renew it.
    """
    if kubeconfig:
        # kopf logs in on its own from the environment; give it the same file.
        os.environ["KUBECONFIG"] = kubeconfig
    kopf.configure(verbose=verbose, quiet=not verbose)
    logging.getLogger("lepton.operator").setLevel(logging.DEBUG if verbose else logging.WARNING)
    config = OperatorConfig(
        scheduler_name=scheduler_name,
        energy_source=(
            PrometheusEnergySource(prometheus_url, prometheus_query) if prometheus_url else None
        ),
    )
    api_client = kube_api_client(kubeconfig)
    memo = OperatorMemo(api=KubeApi(api_client), config=config)
    if metrics_address is not None:
        host, port = metrics_address
        start_http_server(port, addr=host, registry=memo.metrics.registry)
    if leader_election is not None:
        flag = stop_flag or threading.Event()
        elector = LeaseElector(
            client.CoordinationV1Api(api_client),
            leader_election.namespace,
            leader_election.lease_name,
            leader_election.identity,
            leader_election.lease_seconds,
        )
        standby = _standby_liveness(liveness_endpoint) if liveness_endpoint else None
        try:
            if not elector.wait_until_leader(flag):
                return
        finally:
            if standby is not None:
                standby.shutdown()
                standby.server_close()
        # Embedded (a stop flag given): stop kopf. A process: exit at once, so that nothing is
        # written after the renew deadline; it restarts as a follower.
        on_lost = flag.set if stop_flag is not None else (lambda: os._exit(1))
        threading.Thread(
            target=elector.keep_renewing, args=(flag, on_lost), daemon=True, name="lease"
        ).start()
        stop_flag = flag
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=namespace is None,
            namespaces=[namespace] if namespace else (),
            memo=memo,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            liveness_endpoint=liveness_endpoint,
        )
    )
