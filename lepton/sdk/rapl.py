"""Reading CPU energy from RAPL through the Linux powercap interface.

RAPL is the only energy counter most servers have for their CPUs. Linux exposes
it under ``/sys/class/powercap/intel-rapl:<package>`` (AMD family 17h and newer
uses the same path) as ``energy_uj``, a microjoule counter that wraps at
``max_energy_range_uj``. It is readable by root only since Linux 5.10
(CVE-2020-8694) and containers see it only when the host's ``/sys`` is mounted,
so finding no zone is normal and the engine falls back to the model meter.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from lepton.core.metering import wrapping_counter_delta

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
# Lets a pod that mounts the host's /sys elsewhere (Kepler uses /host/sys) point here.
POWERCAP_ROOT_ENV = "LEPTON_POWERCAP_ROOT"

# Top-level zones are packages ("intel-rapl:0"); "intel-rapl:0:1" are their subzones.
_PACKAGE_ZONE = re.compile(r"^intel-rapl:(\d+)$")


@dataclass(frozen=True)
class RaplZone:
    """One package-level RAPL zone: where to read it and how far it counts."""

    path: Path
    name: str
    max_energy_range_uj: int

    def read_energy_uj(self) -> int:
        """The zone's cumulative counter in microjoules."""
        return int((self.path / "energy_uj").read_text().strip())


def powercap_root() -> Path:
    """The powercap directory: ``$LEPTON_POWERCAP_ROOT`` or ``/sys/class/powercap``."""
    configured = os.environ.get(POWERCAP_ROOT_ENV)
    return Path(configured) if configured else DEFAULT_POWERCAP_ROOT


def find_package_zones(root: Path | None = None) -> list[RaplZone]:
    """The readable package zones under ``root``, in package order; empty when none is readable.

    Subzones (core, uncore, dram) are left out: a package's counter already
    includes its cores, and summing both would count them twice.
    """
    root = root if root is not None else powercap_root()
    if not root.is_dir():
        return []
    zones: list[tuple[int, RaplZone]] = []
    for entry in root.iterdir():
        match = _PACKAGE_ZONE.match(entry.name)
        if not match:
            continue
        try:
            name = (entry / "name").read_text().strip()
            max_range = int((entry / "max_energy_range_uj").read_text().strip())
            zone = RaplZone(path=entry, name=name, max_energy_range_uj=max_range)
            zone.read_energy_uj()  # unreadable (not root) zones are skipped, not fatal
        except (OSError, ValueError):
            continue
        zones.append((int(match.group(1)), zone))
    return [zone for _, zone in sorted(zones, key=lambda item: item[0])]


class RaplCounter:
    """A zone's energy since this object was created, in joules, across wraparounds."""

    def __init__(self, zone: RaplZone) -> None:
        self.zone = zone
        self._last_uj = zone.read_energy_uj()
        self._total_uj = 0.0
        self._lock = threading.Lock()  # the engine's poller and its phases both read

    def energy_joules_total(self) -> float:
        """Joules spent since creation; must be called more often than once per wrap."""
        with self._lock:
            current = self.zone.read_energy_uj()
            self._total_uj += wrapping_counter_delta(
                self._last_uj, current, self.zone.max_energy_range_uj
            )
            self._last_uj = current
            return self._total_uj / 1e6
