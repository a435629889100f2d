"""Wiring: which backends ``lepton exporter`` builds, and the mistakes it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from lepton_exporter.main import build_exporter

from lepton.hw.fake_nvml import FakeGpu, FakeNvml
from tests.support.exporter import scrape, series


def test_nvml_and_rapl_run_side_by_side_on_one_node(tmp_path: Path) -> None:
    zone = tmp_path / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("5\n")
    fake = FakeNvml([FakeGpu(uuid="GPU-a")])
    exporter, stoppers = build_exporter(
        "nvml,rapl", "node-7", None, str(tmp_path), None, False, nvml=fake
    )
    exporter.sample_once()
    got = scrape(exporter.accountant)
    assert series(got, "lepton_exporter_up", node="node-7", source="nvml") == [1.0]
    assert series(got, "lepton_exporter_up", node="node-7", source="rapl") == [1.0]
    assert series(got, "lepton_gpu_up", gpu_uuid="GPU-a") == [1.0]
    for stop in stoppers:
        stop()
    assert not fake.initialized


def test_an_unknown_backend_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nvml, rapl, model"):
        build_exporter("dcgm", "n", None, str(tmp_path), None, False)


def test_power_capping_without_nvml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs the nvml backend"):
        build_exporter("rapl", "n", None, str(tmp_path), None, True)


def test_sharing_attribution_without_nvml_or_a_proc_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need the nvml backend"):
        build_exporter("rapl", "n", None, str(tmp_path), None, False, sharing_attribution=True)
    with pytest.raises(ValueError, match="hostPID"):
        build_exporter(
            "nvml",
            "n",
            None,
            str(tmp_path),
            None,
            False,
            nvml=FakeNvml([FakeGpu(uuid="GPU-a")]),
            sharing_attribution=True,
            proc_root=str(tmp_path / "absent"),
        )


def test_dra_without_the_pod_resources_socket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--podresources-socket"):
        build_exporter("nvml", "n", None, str(tmp_path), None, False, nvml=FakeNvml([]), dra=True)
