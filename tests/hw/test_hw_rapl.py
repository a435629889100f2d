"""One RAPL reader, one root convention: the powercap directory, however it is reached."""

from __future__ import annotations

from pathlib import Path

import pytest
from lepton_exporter.rapl import RaplBackend

from lepton.hw.rapl import POWERCAP_ROOT_ENV, find_package_zones, powercap_dir, powercap_root


def host_sys(root: Path) -> Path:
    """A host /sys with two packages, the first with a dram subzone."""
    for directory, name, energy in (
        ("intel-rapl:0", "package-0", 1_000),
        ("intel-rapl:0:0", "dram", 2_000),
        ("intel-rapl:1", "package-1", 3_000),
    ):
        zone = powercap_dir(root) / directory
        zone.mkdir(parents=True)
        (zone / "name").write_text(f"{name}\n")
        (zone / "energy_uj").write_text(f"{energy}\n")
        (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root


def test_the_sdk_env_and_the_exporter_sysfs_root_reach_the_same_zones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysfs = host_sys(tmp_path / "host-sys")
    # The SDK: $LEPTON_POWERCAP_ROOT names the powercap directory itself.
    monkeypatch.setenv(POWERCAP_ROOT_ENV, str(sysfs / "class" / "powercap"))
    assert powercap_root() == powercap_dir(sysfs)
    sdk = find_package_zones()
    # The exporter: --sysfs-root names the host's /sys mount (/host/sys in the chart).
    exporter = RaplBackend(powercap_dir(sysfs), "n1").zones()
    assert [z.name for z in sdk] == ["package-0", "package-1"]
    assert [z.name for z in exporter] == ["package-0", "package-0/dram", "package-1"]
    assert [z.path for z in sdk] == [z.path for z in exporter if z.is_package]


def test_without_the_env_the_sdk_reads_the_hosts_own_powercap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(POWERCAP_ROOT_ENV, raising=False)
    assert powercap_root() == Path("/sys/class/powercap")
