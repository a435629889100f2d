"""Start the operator: wire the API client, the energy source and kopf together."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import kopf
from prometheus_client import start_http_server

from lepton.core.names import SCHEDULER_NAME as DEFAULT_SCHEDULER_NAME

from .admission import OperatorConfig
from .handlers import OperatorMemo, registry
from .kube import KubeApi, load_client
from .prometheus import DEFAULT_QUERY_TEMPLATE, PrometheusEnergySource


def run(
    kubeconfig: str | None = None,
    namespace: str | None = None,
    prometheus_url: str | None = None,
    *,
    scheduler_name: str = DEFAULT_SCHEDULER_NAME,
    prometheus_query: str = DEFAULT_QUERY_TEMPLATE,
    verbose: bool = False,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
    liveness_endpoint: str | None = None,
    metrics_address: tuple[str, int] | None = None,
) -> None:
    """Run the operator until stopped (blocking). ``namespace=None`` watches all namespaces.

    ``liveness_endpoint`` (e.g. ``http://0.0.0.0:8080/healthz``) is kopf's probe endpoint;
    ``metrics_address`` (host, port) serves the budgets' gauges on ``/metrics``.
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
    memo = OperatorMemo(api=KubeApi(load_client(kubeconfig)), config=config)
    if metrics_address is not None:
        host, port = metrics_address
        start_http_server(port, addr=host, registry=memo.metrics.registry)
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
