"""Helpers shared by the exporter's tests: render a registry and read one series back, and
serve an exporter for a real Prometheus (:mod:`tests.support.prometheus`) to scrape."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from lepton_exporter.accounting import Accountant
from lepton_exporter.main import Exporter
from lepton_exporter.metrics import LeptonCollector
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from lepton.cluster.processes import free_port


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
