"""The RAPL backend over a fake powercap tree in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from lepton_exporter.accounting import Accountant
from lepton_exporter.rapl import RaplBackend

from lepton.hw.rapl import powercap_dir
from tests.support.exporter import scrape, series

MAX_RANGE_UJ = 262_143_328_850  # max_energy_range_uj of a real Intel package zone


def make_zone(root: Path, directory: str, name: str, energy_uj: int) -> Path:
    zone = root / "class" / "powercap" / directory
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text(f"{name}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
    return zone


def set_energy(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "host-sys"
    # The control-type directory itself has no counter and must be skipped.
    (root / "class" / "powercap" / "intel-rapl").mkdir(parents=True)
    make_zone(root, "intel-rapl:0", "package-0", 1_000_000)
    make_zone(root, "intel-rapl:0:0", "dram", 500_000)
    make_zone(root, "intel-rapl:1", "package-1", 2_000_000)
    make_zone(root, "intel-rapl:1:0", "dram", 0)
    return root


def test_zones_are_named_by_package_and_subzone(sysfs: Path) -> None:
    labels = [zone.name for zone in RaplBackend(powercap_dir(sysfs), "n1").zones()]
    assert labels == ["package-0", "package-0/dram", "package-1", "package-1/dram"]


def test_package_and_dram_joules_accumulate_and_survive_a_wrap(sysfs: Path) -> None:
    backend = RaplBackend(powercap_dir(sysfs), "n1")
    accountant = Accountant()
    accountant.record(backend.read(), 0.0, "n1")
    powercap = sysfs / "class" / "powercap"
    set_energy(powercap / "intel-rapl:0", 6_000_000)  # +5 J
    set_energy(powercap / "intel-rapl:0:0", MAX_RANGE_UJ - 1_000_000)
    accountant.record(backend.read(), 1.0, "n1")
    set_energy(powercap / "intel-rapl:0:0", 2_000_000)  # wrapped: +1 J to the top, +2 J after
    accountant.record(backend.read(), 2.0, "n1")
    got = scrape(accountant)
    assert series(got, "lepton_cpu_energy_joules_total", zone="package-0", source="rapl") == [
        pytest.approx(5.0)
    ]
    dram = series(got, "lepton_cpu_energy_joules_total", zone="package-0/dram")
    assert dram == [pytest.approx((MAX_RANGE_UJ - 1_000_000 - 500_000) / 1e6 + 3.0)]
    assert series(got, "lepton_cpu_energy_joules_total", zone="package-1") == [0.0]
    assert series(got, "lepton_exporter_up", source="rapl") == [1.0]


def test_an_unreadable_zone_is_counted_and_the_others_still_served(sysfs: Path) -> None:
    zone = sysfs / "class" / "powercap" / "intel-rapl:1"
    (zone / "energy_uj").write_text("garbage\n")
    accountant = Accountant()
    accountant.record(RaplBackend(powercap_dir(sysfs), "n1").read(), 0.0, "n1")
    got = scrape(accountant)
    assert series(got, "lepton_exporter_device_errors_total", device="package-1") == [1.0]
    assert len(series(got, "lepton_cpu_energy_joules_total")) == 3
    assert series(got, "lepton_exporter_up", source="rapl") == [1.0]


def test_a_host_without_powercap_reports_the_backend_down(tmp_path: Path) -> None:
    accountant = Accountant()
    accountant.record(RaplBackend(powercap_dir(tmp_path), "n1").read(), 0.0, "n1")
    got = scrape(accountant)
    assert series(got, "lepton_exporter_up", source="rapl") == [0.0]
    assert series(got, "lepton_exporter_device_errors_total", error="not_found") == [1.0]
