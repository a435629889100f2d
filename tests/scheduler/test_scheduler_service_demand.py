"""A service's demand from its workload's utilisation history in a real Prometheus.

The history is backfilled into Prometheus's TSDB with ``promtool`` (six hours of
the exporter's metrics, one sample a minute), so the range query, the join of a
GPU's utilisation onto the pods holding it, the forecast and the placement are
all the real ones.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from lepton_scheduler.demand import ServiceDemands
from lepton_scheduler.history import PrometheusHistory
from scheduler_helpers import FLEET, fleet_cache

from lepton.cluster.local import free_port
from lepton.core.hints import JobHints, WorkloadKind
from lepton.core.predictor import ForecastSource, LoadPredictor, PredictorConfig
from lepton.core.scoring import filter_nodes

HOURS = 6
GPU = 'node="{node}",gpu_uuid="{gpu}",gpu_model="NVIDIA-A40",source="nvml"'
# Two Deployments' ReplicaSets, two pods each on a GPU of its own: one quiet, one busy.
WORKLOADS = {"quiet-7c9d": 0.25, "busy-5f6b": 0.75}


def openmetrics(now: int) -> str:
    """The exporter's GPU utilisation and pod energy, a sample a minute for ``HOURS``."""
    utilization = ["# TYPE lepton_gpu_utilization_ratio gauge"]
    energy = ["# TYPE lepton_pod_gpu_idle_energy_joules counter"]
    for w, (owner, level) in enumerate(WORKLOADS.items()):
        for replica in range(2):
            labels = GPU.format(node=f"a40-{w}", gpu=f"GPU-{w}{replica}")
            pod = f'{labels},namespace="ml",pod="{owner}-x{replica}",container="server"'
            for k, t in enumerate(range(now - HOURS * 3600, now, 60)):
                busy = level + 0.1 * math.sin(k / 9 + replica) + 0.05 * math.sin(k / 2.3)
                utilization.append(f"lepton_gpu_utilization_ratio{{{labels}}} {busy:.4f} {t}")
                energy.append(f"lepton_pod_gpu_idle_energy_joules_total{{{pod}}} {k} {t}")
    return "\n".join([*utilization, *energy, "# EOF"]) + "\n"


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus over a TSDB backfilled with :func:`openmetrics`."""
    promtool, binary = shutil.which("promtool"), shutil.which("prometheus")
    assert promtool and binary, "install Prometheus: apt-get install -y prometheus"
    source = tmp_path / "history.om"
    source.write_text(openmetrics(int(time.time())))
    subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(source),
            str(tmp_path / "tsdb"),
        ],
        check=True,
        capture_output=True,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "Prometheus did not become ready"
        time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_pod_history_is_its_gpus_utilisation(prometheus: str) -> None:
    end = datetime.now(UTC)
    pods = PrometheusHistory(prometheus).pod_utilization(
        "ml", "quiet-7c9d-[a-z0-9]+", end - timedelta(hours=HOURS), end, 300.0
    )
    assert sorted(pods) == ["quiet-7c9d-x0", "quiet-7c9d-x1"]
    assert all(len(s) > 60 and 0.1 < s.values.mean() < 0.4 for s in pods.values())
    other = PrometheusHistory(prometheus).pod_utilization(
        "other", ".*", end - timedelta(hours=HOURS), end, 300.0
    )
    assert other == {}


def test_a_new_service_is_placed_on_a_gpu_its_forecast_fits(prometheus: str) -> None:
    """A quiet workload's new pod fits an A40; a busy one's is kept off it, onto an H100."""
    predictor = LoadPredictor(PredictorConfig(max_iter=30))
    demands = ServiceDemands(PrometheusHistory(prometheus), predictor, HOURS * 3600.0)
    history = {**demands.workload("ml", "quiet-7c9d"), **demands.workload("ml", "busy-5f6b")}
    assert predictor.fit(history)
    known, _ = fleet_cache().table([n[0] for n in FLEET], ())
    placed = {}
    for owner in WORKLOADS:
        # Declared low on purpose: measured load must win over the guess.
        service = JobHints(
            owner, workload_kind=WorkloadKind.SERVICE, reference_utilization_percent=10
        )
        hints, demand = demands.hints("ml", f"{owner}-new01", owner, service, declared=True)
        assert demand is not None and demand.source is ForecastSource.WORKLOAD_HISTORY
        assert hints.reference_utilization_percent == demand.reference_utilization_percent
        placed[owner] = (demand, {n.name for n in filter_nodes(known, hints).passed})
    quiet, busy = placed["quiet-7c9d"], placed["busy-5f6b"]
    assert 30 < quiet[0].reference_utilization_percent < 60  # the p90 of ~25 % busy
    assert busy[0].reference_utilization_percent > 80  # above the A40's 80 % target
    assert {"a40-0", "a40-1"} <= quiet[1]
    assert not {"a40-0", "a40-1"} & busy[1] and {"h100-0", "h100-1"} <= busy[1]
