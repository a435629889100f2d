"""Meters: NVML (fake library), RAPL (fake powercap tree) and the labelled models."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton.core.profiles import get_profile
from lepton.hw.fake_nvml import ERROR_NO_PERMISSION, FakeClock, curve_fleet, median_a40_curve
from lepton.hw.nvml import NvmlUnavailableError, PowerLimitError, open_gpus
from lepton.hw.rapl import RaplCounter, find_package_zones
from lepton.sdk.meters import (
    CpuModelMeter,
    GpuModelMeter,
    MeterSource,
    NvmlEnergyMeter,
    RaplMeter,
    discover_meters,
)

NO_RAPL = Path("/nonexistent/powercap")


def make_zone(root: Path, zone: str, name: str, energy_uj: int, max_uj: int = 1_000_000) -> Path:
    path = root / zone
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def test_rapl_counts_across_a_wraparound(tmp_path: Path) -> None:
    zone_path = make_zone(tmp_path, "intel-rapl:0", "package-0", 900_000, max_uj=1_000_000)
    zone = find_package_zones(tmp_path)[0]
    counter = RaplCounter(zone)
    (zone_path / "energy_uj").write_text("950000\n")
    assert counter.energy_joules_total() == pytest.approx(0.05)
    (zone_path / "energy_uj").write_text("30000\n")  # wrapped: 50 000 to the top, 30 000 after
    assert counter.energy_joules_total() == pytest.approx(0.13)


def test_rapl_meters_packages_only_and_in_package_order(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:1", "package-1", 5)
    make_zone(tmp_path, "intel-rapl:0", "package-0", 5)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 5)  # inside package-0: not added twice
    make_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 5)
    zones = find_package_zones(tmp_path)
    assert [z.name for z in zones] == ["package-0", "package-1"]


def test_unreadable_rapl_zone_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = make_zone(tmp_path, "intel-rapl:0", "package-0", 5)
    (path / "energy_uj").write_text("permission denied is simulated by garbage\n")
    assert find_package_zones(tmp_path) == []
    assert find_package_zones(tmp_path / "missing") == []


def test_discovery_uses_rapl_when_readable_and_labels_it_measured(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    found = discover_meters(use_nvml=False, powercap_root=tmp_path)
    assert [m.name for m in found.meters] == ["cpu:package-0"]
    meter = found.meters[0]
    assert isinstance(meter, RaplMeter)
    assert meter.source is MeterSource.RAPL and not meter.source.estimated
    assert meter.needs_polling  # wraps: the engine must poll it


def test_discovery_falls_back_to_the_cpu_model_labelled_estimated() -> None:
    found = discover_meters(use_nvml=False, powercap_root=NO_RAPL)
    assert [m.name for m in found.meters] == ["cpu:process"]
    assert found.meters[0].source.estimated
    assert "no readable RAPL" in " ".join(found.notes)


def test_cpu_model_charges_the_cpu_time_used_at_the_per_core_power() -> None:
    cpu_seconds = [10.0]
    meter = CpuModelMeter(process_clock=lambda: cpu_seconds[0], watts_per_busy_core=7.5)
    cpu_seconds[0] = 14.0  # four busy core-seconds
    assert meter.energy_joules_total() == pytest.approx(30.0)
    assert "model, not measured" in meter.description


def test_nvml_meter_reads_the_millijoule_counter(shipped_data: Path) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data))
    meter = NvmlEnergyMeter(open_gpus(fake)[0], fake.clock)
    fake.run_step()
    want_joules = fake.gpus[0].energy_mj / 1e3
    assert meter.energy_joules_total() == pytest.approx(want_joules, abs=1e-3)
    assert meter.name == "gpu:GPU-00000000-fake-a40"
    assert not meter.needs_polling
    assert "NVIDIA A40" in meter.description  # bytes from old bindings are decoded


def test_nvml_counter_reset_by_a_driver_reload_is_not_negative(shipped_data: Path) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data))
    meter = NvmlEnergyMeter(open_gpus(fake)[0], fake.clock)
    fake.idle(10)  # 30 W x 10 s = 300 J
    assert meter.energy_joules_total() == pytest.approx(300)
    fake.gpus[0].energy_mj = 0.0  # driver reloaded
    fake.idle(1)
    assert meter.energy_joules_total() == pytest.approx(330)


def test_nvml_without_energy_counter_integrates_sampled_power(shipped_data: Path) -> None:
    curve = median_a40_curve(shipped_data)
    fake = curve_fleet(curve, energy_counter=False)
    meter = NvmlEnergyMeter(open_gpus(fake)[0], fake.clock)
    assert meter.needs_polling
    for _ in range(10):
        fake.run_step()
        meter.energy_joules_total()
    want = 10 * curve.joules_per_step(300.0)
    assert meter.energy_joules_total() == pytest.approx(want, rel=1e-3)


def test_missing_nvml_library_says_what_to_do(shipped_data: Path) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data), library_present=False)
    with pytest.raises(NvmlUnavailableError, match=r"nvidia.com/gpu|--gpus"):
        open_gpus(fake)


def test_setting_a_limit_reads_it_back_and_explains_missing_permission(
    shipped_data: Path,
) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data))
    gpu = open_gpus(fake)[0]
    assert gpu.set_power_limit_watts(200) == 200
    assert gpu.power_limit_range_watts() == (100, 300)
    with pytest.raises(PowerLimitError, match="nvidia-smi"):
        gpu.set_power_limit_watts(50)
    fake.gpus[0].failing_calls["nvmlDeviceSetPowerManagementLimit"] = ERROR_NO_PERMISSION
    with pytest.raises(PowerLimitError, match="CAP_SYS_ADMIN"):
        gpu.set_power_limit_watts(250)


def test_discovery_prefers_nvml_and_hands_its_gpus_to_the_optimizer(shipped_data: Path) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data), gpu_count=2)
    found = discover_meters(nvml=fake, powercap_root=NO_RAPL, gpu_model="A40")
    gpu_meters = [m for m in found.meters if m.device == "gpu"]
    assert [m.source for m in gpu_meters] == [MeterSource.NVML, MeterSource.NVML]
    assert len(found.gpus) == 2


def test_without_nvml_a_named_gpu_model_is_estimated_from_its_profile() -> None:
    clock = FakeClock()
    found = discover_meters(
        use_nvml=False, powercap_root=NO_RAPL, gpu_model="A40", gpu_count=2, clock=clock
    )
    gpu_meters = [m for m in found.meters if m.device == "gpu"]
    assert len(gpu_meters) == 2
    assert all(isinstance(m, GpuModelMeter) and m.source.estimated for m in gpu_meters)
    clock.advance(3600)
    busy_watts = get_profile("A40").active_power_watts(1.0)
    assert gpu_meters[0].energy_joules_total() == pytest.approx(busy_watts * 3600)
    assert "not measured" in gpu_meters[0].description


def test_without_nvml_or_gpu_model_there_is_no_gpu_meter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEPTON_GPU_MODEL", raising=False)
    found = discover_meters(use_nvml=False, powercap_root=NO_RAPL)
    assert all(m.device == "cpu" for m in found.meters)
