"""The RAPL backend: CPU package and DRAM energy from the powercap sysfs tree.

Container runtimes mask ``/sys/devices/virtual/powercap`` and the counters
are root-only since Linux 5.10 (CVE-2020-8694), so the DaemonSet mounts the
host's ``/sys`` elsewhere (Kepler uses ``/host/sys``) and this reader takes
that root as an argument. Counters are microjoules that wrap at
``max_energy_range_uj``; the accountant handles the wrap.
"""

from __future__ import annotations

import re
from pathlib import Path

from lepton_exporter.readings import SOURCE_RAPL, CpuZoneReading, DeviceError, Sample

# intel-rapl:<package> and intel-rapl:<package>:<subzone> (AMD uses the same names).
_ZONE_DIR = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


class RaplBackend:
    """Reads every RAPL zone under ``<sysfs_root>/class/powercap``."""

    source = SOURCE_RAPL

    def __init__(self, sysfs_root: str | Path, node: str) -> None:
        self.powercap = Path(sysfs_root) / "class" / "powercap"
        self.node = node

    def zones(self) -> list[tuple[str, Path]]:
        """(zone label, directory) for every zone: ``package-0``, ``package-0/dram`` …"""
        if not self.powercap.is_dir():
            return []
        found: list[tuple[tuple[int, int], Path]] = []
        for entry in self.powercap.iterdir():
            match = _ZONE_DIR.match(entry.name)
            if match:
                package, sub = match.group(1), match.group(2)
                found.append(((int(package), -1 if sub is None else int(sub)), entry))
        found.sort()
        names: dict[int, str] = {}
        zones: list[tuple[str, Path]] = []
        for (package, sub), directory in found:
            name = _read_text(directory / "name") or f"zone-{package}"
            if sub == -1:
                names[package] = name
                zones.append((name, directory))
            else:
                zones.append((f"{names.get(package, f'package-{package}')}/{name}", directory))
        return zones

    def read(self) -> Sample:
        sample = Sample(source=self.source, up=True)
        zones = self.zones()
        if not zones:
            sample.up = False
            sample.errors.append(
                DeviceError(self.node, str(self.powercap), self.source, "list_zones", "not_found")
            )
            return sample
        for label, directory in zones:
            try:
                energy = float((directory / "energy_uj").read_text().strip())
                max_range_path = directory / "max_energy_range_uj"
                max_range = (
                    float(max_range_path.read_text().strip()) if max_range_path.exists() else 0.0
                )
            except (OSError, ValueError) as error:
                sample.errors.append(
                    DeviceError(
                        self.node, label, self.source, "read_energy_uj", _os_error_label(error)
                    )
                )
                continue
            sample.cpu_zones.append(CpuZoneReading(self.node, label, energy, max_range))
        if not sample.cpu_zones:
            sample.up = False
        return sample


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _os_error_label(error: BaseException) -> str:
    if isinstance(error, PermissionError):
        return "no_permission"
    if isinstance(error, FileNotFoundError):
        return "not_found"
    if isinstance(error, ValueError):
        return "unreadable"
    return "os_error"
