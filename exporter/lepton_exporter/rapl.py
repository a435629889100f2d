"""The RAPL backend: CPU package and DRAM energy from the powercap sysfs tree.

The zones are found and read by :mod:`lepton.hw.rapl`, which takes the powercap
directory; the DaemonSet mounts the host's ``/sys`` elsewhere (``--sysfs-root``,
``/host/sys`` in the chart) and :func:`lepton.hw.rapl.powercap_dir` turns that
mount into the directory. Counters are microjoules that wrap at
``max_energy_range_uj``; the accountant handles the wrap.
"""

from __future__ import annotations

from pathlib import Path

from lepton.hw.rapl import RaplZone, list_zones
from lepton_exporter.readings import SOURCE_RAPL, CpuZoneReading, DeviceError, Sample


class RaplBackend:
    """Reads every RAPL zone (packages and their subzones) under a powercap directory."""

    source = SOURCE_RAPL

    def __init__(self, powercap: str | Path, node: str) -> None:
        self.powercap = Path(powercap)
        self.node = node

    def zones(self) -> list[RaplZone]:
        """Every zone: ``package-0``, ``package-0/dram`` …"""
        return list_zones(self.powercap)

    def read(self) -> Sample:
        sample = Sample(source=self.source, up=True)
        zones = self.zones()
        if not zones:
            sample.up = False
            sample.errors.append(
                DeviceError(self.node, str(self.powercap), self.source, "list_zones", "not_found")
            )
            return sample
        for zone in zones:
            try:
                energy = float(zone.read_energy_uj())
                max_range = float(zone.read_max_energy_range_uj() or 0)
            except (OSError, ValueError) as error:
                sample.errors.append(
                    DeviceError(
                        self.node, zone.name, self.source, "read_energy_uj", _os_error_label(error)
                    )
                )
                continue
            sample.cpu_zones.append(CpuZoneReading(self.node, zone.name, energy, max_range))
        if not sample.cpu_zones:
            sample.up = False
        return sample


def _os_error_label(error: BaseException) -> str:
    if isinstance(error, PermissionError):
        return "no_permission"
    if isinstance(error, FileNotFoundError):
        return "not_found"
    if isinstance(error, ValueError):
        return "unreadable"
    return "os_error"
