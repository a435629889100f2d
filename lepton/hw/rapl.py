"""CPU energy from RAPL through the Linux powercap interface: the one reader.

RAPL is the only energy counter most servers have for their CPUs. Linux exposes
it as ``<powercap>/intel-rapl:<package>[:<subzone>]/energy_uj`` (AMD family 17h
and newer uses the same names), a microjoule counter that wraps at
``max_energy_range_uj``. It is readable by root only since Linux 5.10
(CVE-2020-8694), and containers see it only when the host's ``/sys`` is mounted
(container runtimes mask ``/sys/devices/virtual/powercap``), so finding no zone
is normal.

**One root convention:** every function here takes the *powercap directory*
itself (``/sys/class/powercap`` on a host). Where only the host's ``/sys`` mount
is known (the exporter's ``--sysfs-root``, e.g. ``/host/sys`` in the chart),
:func:`powercap_dir` is the one place that turns it into that directory. The
SDK's ``$LEPTON_POWERCAP_ROOT`` names the powercap directory too
(:func:`powercap_root`).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from lepton.core.metering import wrapping_counter_delta

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
# Lets a pod that mounts the host's /sys elsewhere (Kepler uses /host/sys) point here:
# the powercap directory itself, e.g. /host/sys/class/powercap.
POWERCAP_ROOT_ENV = "LEPTON_POWERCAP_ROOT"

# Packages are "intel-rapl:0"; "intel-rapl:0:1" are their subzones (core, uncore, dram).
_ZONE_DIR = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


def powercap_dir(sysfs_root: str | Path) -> Path:
    """The powercap directory under a mounted ``/sys`` (``<sysfs_root>/class/powercap``)."""
    return Path(sysfs_root) / "class" / "powercap"


def powercap_root() -> Path:
    """The powercap directory: ``$LEPTON_POWERCAP_ROOT`` or ``/sys/class/powercap``."""
    configured = os.environ.get(POWERCAP_ROOT_ENV)
    return Path(configured) if configured else DEFAULT_POWERCAP_ROOT


@dataclass(frozen=True)
class RaplZone:
    """One RAPL zone: where to read it, its package, and its name.

    ``name`` is the zone's own ``name`` file for a package (``package-0``) and
    ``<package name>/<subzone name>`` for a subzone (``package-0/dram``).
    """

    path: Path
    name: str
    package: int
    subzone: int | None = None

    @property
    def is_package(self) -> bool:
        return self.subzone is None

    def read_energy_uj(self) -> int:
        """The zone's cumulative counter in microjoules (raises OSError or ValueError)."""
        return int((self.path / "energy_uj").read_text().strip())

    def read_max_energy_range_uj(self) -> int | None:
        """Where the counter wraps, in microjoules; None when the zone does not say."""
        path = self.path / "max_energy_range_uj"
        if not path.exists():
            return None
        return int(path.read_text().strip())


def list_zones(powercap: Path) -> list[RaplZone]:
    """Every zone under the powercap directory, each package followed by its subzones."""
    if not powercap.is_dir():
        return []
    found: list[tuple[tuple[int, int], Path]] = []
    for entry in powercap.iterdir():
        match = _ZONE_DIR.match(entry.name)
        if match:
            package, sub = match.group(1), match.group(2)
            found.append(((int(package), -1 if sub is None else int(sub)), entry))
    found.sort()
    names: dict[int, str] = {}
    zones: list[RaplZone] = []
    for (package, sub), directory in found:
        name = _read_text(directory / "name") or f"zone-{package}"
        if sub == -1:
            names[package] = name
            zones.append(RaplZone(directory, name, package))
        else:
            parent = names.get(package, f"package-{package}")
            zones.append(RaplZone(directory, f"{parent}/{name}", package, sub))
    return zones


def find_package_zones(root: Path | None = None) -> list[RaplZone]:
    """The readable package zones under the powercap directory ``root``, in package order.

    ``root`` defaults to :func:`powercap_root`. Subzones (core, uncore, dram) are
    left out: a package's counter already includes its cores, and summing both
    would count them twice. Unreadable zones (not root) are skipped, not fatal.
    """
    found: list[RaplZone] = []
    for zone in list_zones(root if root is not None else powercap_root()):
        if not zone.is_package:
            continue
        try:
            if zone.read_max_energy_range_uj() is None:
                continue
            zone.read_energy_uj()
        except (OSError, ValueError):
            continue
        found.append(zone)
    return found


class RaplCounter:
    """A package's energy since this object was created, in joules, across wraparounds."""

    def __init__(self, zone: RaplZone) -> None:
        self.zone = zone
        self._max_range_uj = zone.read_max_energy_range_uj() or 0
        self._last_uj = zone.read_energy_uj()
        self._total_uj = 0.0
        self._lock = threading.Lock()  # the engine's poller and its phases both read

    def energy_joules_total(self) -> float:
        """Joules spent since creation; must be called more often than once per wrap."""
        with self._lock:
            current = self.zone.read_energy_uj()
            self._total_uj += wrapping_counter_delta(self._last_uj, current, self._max_range_uj)
            self._last_uj = current
            return self._total_uj / 1e6


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
