"""A real Prometheus scrapes the exporter, and every metric family answers a PromQL query."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from lepton_exporter.main import Exporter
from lepton_exporter.metrics import METRICS
from lepton_exporter.model import FleetNode, FleetPod, ModelBackend, static_fleet
from lepton_exporter.nvml import NvmlBackend
from lepton_exporter.powercap import PowerCapper
from lepton_exporter.rapl import RaplBackend
from lepton_exporter.readings import PodRef

from lepton.hw.fake_nvml import FakeGpu, FakeNvml, mig_gpu
from lepton.hw.rapl import powercap_dir
from tests.support.exporter import serving
from tests.support.prometheus import query, running_prometheus
from tests.support.wait import wait_for

NODE = "gpu-node-1"
TRAINER = PodRef("ml", "train-0", "trainer")


def fake_sysfs(root: Path) -> None:
    zone = root / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")


@pytest.fixture
def exporter_url(tmp_path: Path) -> Iterator[str]:
    """An exporter with all three backends (fake NVML, fake sysfs, a static kwok-like fleet)."""
    fake = FakeNvml(
        [
            FakeGpu(uuid="GPU-train", power_mw=250_000, utilization_percent=95),
            # No pod holds this one, and its temperature sensor fails: unattributed + errors.
            FakeGpu(
                uuid="GPU-free",
                power_mw=90_000,
                failing_calls={"nvmlDeviceGetTemperature": 999},
            ),
            # A MIG board: its split among MIG devices is a model (source="mig_model").
            mig_gpu("GPU-mig", [(3, "3g.40gb"), (4, "4g.40gb")]),
        ]
    )
    nvml = NvmlBackend(fake, NODE)
    nvml.start()
    fake_sysfs(tmp_path / "sys")
    fleet = static_fleet(
        [FleetNode("kwok-a40-0", "NVIDIA-A40", 2), FleetNode("kwok-l4-0", "NVIDIA-L4", 4)],
        [FleetPod("ml", "sim-0", "kwok-a40-0", 1, container="main")],
    )
    exporter = Exporter(
        backends=[nvml, RaplBackend(powercap_dir(tmp_path / "sys"), NODE), ModelBackend(fleet)],
        node=NODE,
        holders=lambda: {"GPU-train": [TRAINER], "MIG-mig-0": [PodRef("ml", "mig-0", "main")]},
        clock=fake.clock,
    )
    annotations: dict[PodRef, Mapping[str, str]] = {TRAINER: {"lepton.dev/power-cap": "200"}}
    exporter.capper = PowerCapper(fake, nvml.handle_for_uuid, NODE)
    exporter.annotations_for = lambda pod: annotations.get(pod, {})
    with serving(exporter, lambda: fake.advance(0.5)) as url:
        yield url


@pytest.fixture
def prometheus(tmp_path: Path, exporter_url: str) -> Iterator[str]:
    with running_prometheus(tmp_path, exporter_url) as url:
        yield url


def test_prometheus_scrapes_every_metric_family(prometheus: str) -> None:
    missing = list(METRICS)

    def every_family_scraped() -> bool:
        missing[:] = [name for name in missing if not query(prometheus, name)]
        return not missing

    wait_for(every_family_scraped, 40, "a series of every metric family", interval=0.5)
    assert missing == [], f"no series in Prometheus for {missing}"

    # The queries users (and the operator) run return what the exporter meant.
    up = query(prometheus, "lepton_exporter_up")
    assert {s["metric"]["source"] for s in up} == {"nvml", "rapl", "model"}
    model = query(prometheus, 'lepton_gpu_power_watts{source="model"}')
    assert {s["metric"]["node"] for s in model} == {"kwok-a40-0", "kwok-l4-0"}
    assert len(model) == 6
    pod = query(
        prometheus,
        'sum by (namespace, pod) (lepton_pod_gpu_active_energy_joules_total{pod="train-0"})',
    )
    assert float(pod[0]["value"][1]) > 0
    cap = query(prometheus, 'lepton_gpu_power_cap_watts{gpu_uuid="GPU-train"}')
    assert float(cap[0]["value"][1]) == 200.0
