"""Energy meters: where a phase's joules come from, and whether they were measured.

A job wants one number per phase, but a machine offers different sources: NVML
for NVIDIA GPUs, RAPL for CPUs, and on VMs or laptops often neither. Each meter
here turns one source into a cumulative joule count, and says which source it
is, so that a figure estimated from a GPU profile or from CPU time is labelled
``estimated`` everywhere it is shown and never passes for a measurement.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from lepton.hw.nvml import NvmlGpu, NvmlUnavailableError, open_gpus
from lepton.hw.rapl import RaplCounter, find_package_zones

log = logging.getLogger(__name__)

# Names the GPU model when no NVML is there to ask (a VM, a kwok node, a laptop).
GPU_MODEL_ENV = "LEPTON_GPU_MODEL"

# The CPU model's power per fully busy core: an Intel Xeon Gold 6248 has 20 cores
# and a 150 W TDP (Intel ARK, product 192446), 7.5 W per core at full load.
CPU_WATTS_PER_BUSY_CORE = 7.5


class MeterSource(StrEnum):
    """Where a meter's joules come from."""

    NVML = "nvml"
    RAPL = "rapl"
    MODEL = "model"

    @property
    def estimated(self) -> bool:
        """Whether the figures are an estimate rather than a measurement."""
        return self is MeterSource.MODEL


class Meter(Protocol):
    """A cumulative energy count for one device."""

    @property
    def name(self) -> str:
        """Unique and stable: ``gpu:<uuid>``, ``cpu:package-0``, ``cpu:process``."""
        ...

    @property
    def device(self) -> str:
        """``gpu`` or ``cpu``: the column the meter's energy is shown in."""
        ...

    @property
    def source(self) -> MeterSource: ...

    @property
    def description(self) -> str:
        """One line for the table's footer: what is measured, or how it is estimated."""
        ...

    @property
    def needs_polling(self) -> bool:
        """Whether the meter must be read every few seconds to stay right (wraps, sampling)."""
        ...

    def energy_joules_total(self) -> float:
        """Joules spent since the meter was created."""
        ...


Clock = Callable[[], float]


class NvmlEnergyMeter:
    """A GPU metered by NVML's energy counter, or by sampling its power where it has none."""

    device = "gpu"
    source = MeterSource.NVML

    def __init__(self, gpu: NvmlGpu, clock: Clock = time.monotonic) -> None:
        self.gpu = gpu
        self.name = f"gpu:{gpu.uuid}"
        self._clock = clock
        self._counter = gpu.has_energy_counter()
        self.needs_polling = not self._counter
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None
        self._integrated_joules = 0.0
        if self._counter:
            gpu.energy_joules_total()  # the first read sets the zero
            self.description = f"{gpu.name}: NVML energy counter (measured)"
        else:
            self.energy_joules_total()
            self.description = f"{gpu.name}: NVML power, sampled (measured)"

    def energy_joules_total(self) -> float:
        if self._counter:
            return self.gpu.energy_joules_total()
        with self._lock:  # trapezoids between power samples; the poller keeps them short
            now, watts = self._clock(), self.gpu.power_watts()
            if self._last is not None:
                then, then_watts = self._last
                self._integrated_joules += (now - then) * (watts + then_watts) / 2
            self._last = (now, watts)
            return self._integrated_joules


class RaplMeter:
    """A CPU package metered by RAPL."""

    device = "cpu"
    source = MeterSource.RAPL
    needs_polling = True  # RAPL wraps; reads must come more often than once per wrap

    def __init__(self, counter: RaplCounter, package_index: int) -> None:
        self.counter = counter
        self.name = f"cpu:package-{package_index}"
        self.description = f"{counter.zone.name} ({counter.zone.path}): RAPL (measured)"

    def energy_joules_total(self) -> float:
        return self.counter.energy_joules_total()


class GpuProfileLike(Protocol):
    """What the model meter needs of ``lepton.core.profiles.GpuProfile``."""

    def active_power_watts(
        self, utilization: float, power_limit_watts: float | None = None
    ) -> float: ...


def load_gpu_profile(gpu_model: str) -> GpuProfileLike:
    """The core's profile for ``gpu_model`` (``A40``, ``NVIDIA-A40`` ...).

    Imported here, not at the top: the profiles load YAML data files, which a
    job that has NVML never needs.
    """
    from lepton.core.profiles import get_profile

    return get_profile(gpu_model)


class GpuModelMeter:
    """A GPU without a meter, estimated from its profile as busy for the whole time."""

    device = "gpu"
    source = MeterSource.MODEL
    needs_polling = False

    def __init__(
        self,
        gpu_model: str,
        profile: GpuProfileLike,
        clock: Clock = time.monotonic,
        utilization: float = 1.0,
        power_limit_watts: float | None = None,
        index: int = 0,
    ) -> None:
        self.name = f"gpu:model-{index}"
        self._clock = clock
        self._start = clock()
        # Inside a training job's phases the GPU is taken as fully busy: the model
        # cannot see utilisation, so the estimate errs high rather than low.
        self._watts = profile.active_power_watts(utilization, power_limit_watts)
        self.description = (
            f"{gpu_model} #{index}: estimated from its profile at {utilization:.0%} "
            f"utilisation, {self._watts:.0f} W (model, not measured)"
        )

    def energy_joules_total(self) -> float:
        return (self._clock() - self._start) * self._watts


class CpuModelMeter:
    """This process's CPU energy, estimated from the CPU time it used."""

    name = "cpu:process"
    device = "cpu"
    source = MeterSource.MODEL
    needs_polling = False

    def __init__(
        self,
        process_clock: Clock = time.process_time,
        watts_per_busy_core: float = CPU_WATTS_PER_BUSY_CORE,
    ) -> None:
        self._process_clock = process_clock
        self._start = process_clock()
        self._watts_per_busy_core = watts_per_busy_core
        self.description = (
            f"this process: estimated from its CPU time x {watts_per_busy_core:g} W per busy "
            "core (model, not measured; no readable RAPL)"
        )

    def energy_joules_total(self) -> float:
        return (self._process_clock() - self._start) * self._watts_per_busy_core


@dataclass(frozen=True)
class MeterDiscovery:
    """The meters found on this machine, and the GPUs they found for the optimizer."""

    meters: list[Meter]
    gpus: list[NvmlGpu]
    notes: list[str]


def discover_meters(
    *,
    nvml: Any = None,
    use_nvml: bool = True,
    powercap_root: Path | None = None,
    gpu_model: str | None = None,
    gpu_count: int = 1,
    clock: Clock = time.monotonic,
    process_clock: Clock = time.process_time,
) -> MeterDiscovery:
    """The best meter for each device: NVML, else the GPU model; RAPL, else the CPU model.

    ``gpu_model`` (or ``$LEPTON_GPU_MODEL``) only matters when NVML is missing:
    it names the GPUs to estimate. Without it, a machine without NVML has no
    GPU meter at all, which is right for a CPU-only job.
    """
    meters: list[Meter] = []
    notes: list[str] = []
    gpus: list[NvmlGpu] = []
    if use_nvml:
        try:
            gpus = open_gpus(nvml)
        except NvmlUnavailableError as error:
            notes.append(f"no GPU measured: {error}")
    for gpu in gpus:
        meters.append(NvmlEnergyMeter(gpu, clock))
    if not gpus:
        model = gpu_model or os.environ.get(GPU_MODEL_ENV)
        if model:
            try:
                profile = load_gpu_profile(model)
            except (ImportError, KeyError, ValueError) as error:
                notes.append(f"no GPU estimate: no profile for {model!r} ({error})")
            else:
                meters.extend(
                    GpuModelMeter(model, profile, clock, index=index) for index in range(gpu_count)
                )
    zones = find_package_zones(powercap_root)
    if zones:
        meters.extend(RaplMeter(RaplCounter(zone), index) for index, zone in enumerate(zones))
    else:
        notes.append("no CPU measured: no readable RAPL zone (needs root and /sys/class/powercap)")
        meters.append(CpuModelMeter(process_clock))
    return MeterDiscovery(meters=meters, gpus=gpus, notes=notes)


def read_all(meters: Sequence[Meter]) -> dict[str, float]:
    """Every meter's cumulative joules, by meter name; a meter that fails reads as absent."""
    readings: dict[str, float] = {}
    for meter in meters:
        try:
            readings[meter.name] = meter.energy_joules_total()
        except Exception as error:  # a meter must never break training
            log.debug("meter %s failed: %s", meter.name, error)
    return readings
