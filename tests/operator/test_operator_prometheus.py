"""The operator's energy query against a real Prometheus scraping a real exposition endpoint.

A job's series are chosen by its pods' exact names, so ``train`` never counts the pods of
``train-2``; a counter that drops (the exporter restarted) loses nothing it counted before.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from lepton_exporter.accounting import Accountant
from lepton_exporter.metrics import LeptonCollector
from lepton_exporter.nvml import NvmlBackend
from lepton_exporter.readings import PodRef
from lepton_operator.prometheus import (
    JOULES_PER_WATT_HOUR,
    PrometheusEnergySource,
    exact_alternation,
    promql_string,
    reset_safe_total,
)
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from lepton.api.jobspec import estimate_energy, estimated_consumption_watt_hours
from lepton.api.v1alpha1 import LeptonJobSpec
from lepton.cluster.processes import free_port
from lepton.core.energy import SECONDS_PER_HOUR
from lepton.hw.fake_nvml import FakeGpu, FakeNvml
from tests.support import wait_for
from tests.support.prometheus import query, running_prometheus

ACTIVE = "lepton_pod_gpu_active_energy_joules_total"
IDLE = "lepton_pod_gpu_idle_energy_joules_total"


class Counters(Collector):
    """Per-pod counters whose values the test sets (an exporter's exposition, no accounting)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], float] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        families = {
            name: CounterMetricFamily(
                name.removesuffix("_total"), "test", labels=["namespace", "pod", "source"]
            )
            for name in (ACTIVE, IDLE)
        }
        with self.lock:
            for (name, namespace, pod), value in self.values.items():
                families[name].add_metric([namespace, pod, "nvml"], value)
        yield from families.values()


@pytest.fixture
def scraping(tmp_path: Path) -> Iterator[tuple[str, CollectorRegistry]]:
    """A real Prometheus scraping a registry (served over HTTP) every second."""
    registry = CollectorRegistry()
    target_port = free_port()
    server, thread = start_http_server(target_port, addr="127.0.0.1", registry=registry)
    try:
        with running_prometheus(tmp_path, f"127.0.0.1:{target_port}") as url:
            yield url, registry
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def prometheus(scraping: tuple[str, CollectorRegistry]) -> tuple[str, Counters]:
    url, registry = scraping
    counters = Counters()
    registry.register(counters)
    return url, counters


def _scraped(url: str, pod: str, value: float, timeout: float = 30.0) -> None:
    def seen() -> bool:
        result = query(url, f'{ACTIVE}{{pod="{pod}"}}')
        return bool(result) and float(result[0]["value"][1]) == value

    wait_for(
        seen,
        timeout,
        f"Prometheus to scrape {pod}={value}",
        ignoring=(requests.RequestException, ValueError),
        interval=0.2,
    )


def test_a_job_counts_only_its_own_pods_and_keeps_energy_across_a_counter_reset(
    prometheus: tuple[str, Counters],
) -> None:
    url, counters = prometheus
    train = ("ml", "train-abcde")
    with counters.lock:
        counters.values[(ACTIVE, "ml", "train-1-qwert")] = 30.0  # an Indexed Job's pod
        counters.values[(ACTIVE, "ml", "train-2-fghij")] = 5000.0  # another job, train-2
        counters.values[(ACTIVE, "other", "train-zzzzz")] = 7000.0  # same name, other namespace
    before_reset = 0.0
    for value in (100.0, 200.0, 50.0, 80.0):  # 200 -> 50: the exporter restarted
        with counters.lock:
            counters.values[(ACTIVE, *train)] = value
        _scraped(url, train[1], value)
        if value == 200.0:
            before_reset = time.time()
    source = PrometheusEnergySource(url)
    # Asked at a past instant (the end of a budget period), it counts what was used by then.
    then = source.job_energy(
        "ml", ["train-abcde", "train-1-qwert"], 600, at=datetime.fromtimestamp(before_reset, UTC)
    )
    assert then is not None
    assert then.watt_hours * JOULES_PER_WATT_HOUR == pytest.approx(200.0 + 30.0)
    energy = source.job_energy("ml", ["train-abcde", "train-1-qwert"], 600)
    assert energy is not None and not energy.estimated
    assert energy.watt_hours * JOULES_PER_WATT_HOUR == pytest.approx(200.0 + 80.0 + 30.0)
    # What the meters had counted by when: both series' newest samples, after the reset's.
    assert energy.sampled_until is not None and energy.sampled_until.timestamp() > before_reset
    other = source.job_energy("ml", ["train-2-fghij"], 600)
    assert other is not None and other.watt_hours * JOULES_PER_WATT_HOUR == pytest.approx(5000.0)
    assert source.job_energy("ml", ["train-gone0"], 600) is None


def test_pod_names_and_namespaces_are_escaped_for_promql() -> None:
    assert exact_alternation(["a.b", "a-b"]) == r"a\-b|a\.b"
    assert promql_string('x"y\\z') == 'x\\"y\\\\z'


def test_reset_safe_total_counts_every_increase_once() -> None:
    assert reset_safe_total([]) == 0.0
    assert reset_safe_total([5.0, 7.0, 7.0, 10.0]) == 10.0
    assert reset_safe_total([5.0, 9.0, 2.0, 4.0, 1.0]) == 9.0 + 4.0 + 1.0


def test_the_meter_charges_what_the_estimate_reserves_for_the_same_pod_at_the_same_power(
    scraping: tuple[str, CollectorRegistry],
) -> None:
    """One basis: the GPUs' active draw plus the idle draw of what the pod holds."""
    url, registry = scraping
    for model, gpu_name in (("A40", "NVIDIA A40"), ("L4", "NVIDIA L4")):
        spec = LeptonJobSpec.model_validate(
            {
                "budgetName": "team",
                "gpuModels": [model],
                "work": {"referenceGpuSeconds": 3600},
                "template": {},
            }
        )
        estimate = estimate_energy(spec)
        watts = estimate.watt_hours * SECONDS_PER_HOUR / estimate.duration_seconds
        pod = PodRef("ml", f"train-{model.lower()}-abcde", "main")
        gpu = FakeGpu(uuid=f"GPU-{model}", name=gpu_name, power_mw=int(watts * 1000))
        gpu.processes = {7: 100}
        fake = FakeNvml([gpu])
        backend = NvmlBackend(fake, "n1")
        backend.start()
        accountant = Accountant()
        seconds = 120
        for _ in range(seconds + 1):
            accountant.record(
                backend.read(),
                now=fake.clock(),
                node="n1",
                holders={gpu.uuid: [pod]},
                resolve_pid={7: pod}.get,
            )
            fake.advance(1.0)
        registry.register(LeptonCollector(accountant))
        metered = wait_for(
            functools.partial(PrometheusEnergySource(url).job_energy, "ml", [pod.pod], 600),
            30,
            "Prometheus to scrape the exporter",
            ignoring=(OSError,),  # Prometheus is still starting
            interval=0.2,
        )
        reserved_basis = estimated_consumption_watt_hours(estimate, seconds)
        assert metered.watt_hours == pytest.approx(reserved_basis, rel=0.02), model
