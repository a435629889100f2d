"""Helpers shared by the exporter's tests: render a registry and read one series back, serve
an exporter to a real Prometheus, and query it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from lepton_exporter.accounting import Accountant
from lepton_exporter.main import Exporter
from lepton_exporter.metrics import LeptonCollector
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from lepton.cluster.processes import free_port
from tests.support import wait_for


def scrape(accountant: Accountant) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample the collector serves, keyed by (sample name, labels)."""
    registry = CollectorRegistry()
    registry.register(LeptonCollector(accountant))
    text = generate_latest(registry).decode()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def series(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> list[float]:
    """Values of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return [v for (n, ls), v in samples.items() if n == name and wanted <= ls]


@contextlib.contextmanager
def serving(
    exporter: Exporter, before_sample: Callable[[], None] | None = None, interval: float = 0.5
) -> Iterator[str]:
    """``exporter`` sampling every ``interval`` seconds in a thread of its own and serving
    /metrics on a free port, as its DaemonSet pod does; yields ``host:port`` to scrape.

    ``before_sample`` runs before each sample: a fake NVML's clock or a fake RAPL counter
    stepping on.
    """
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            if before_sample is not None:
                before_sample()
            exporter.sample_once()
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=exporter.registry())
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        sampler.join(timeout=5)
        server.shutdown()
        thread.join(timeout=5)


@contextlib.contextmanager
def running_prometheus(directory: Path, target: str) -> Iterator[str]:
    """A real Prometheus (Debian's package) scraping ``target`` every second; yields its URL."""
    binary = shutil.which("prometheus")
    assert binary, "install Prometheus: apt-get install -y --no-install-recommends prometheus"
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: lepton-exporter\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    """The instant-query result, or [] while Prometheus is still starting."""
    try:
        reply = requests.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    except requests.ConnectionError:
        return []
    if reply.status_code == 503:  # "Service Unavailable" until the TSDB is open
        return []
    reply.raise_for_status()
    result: list[dict[str, Any]] = reply.json()["data"]["result"]
    return result


def wait_for_series(prometheus: str, promql: str, timeout: float = 40.0) -> list[dict[str, Any]]:
    """Poll ``promql`` until it returns series (the first scrape comes a few seconds in)."""
    return wait_for(
        lambda: query(prometheus, promql), timeout, f"series for {promql}", interval=0.5
    )
