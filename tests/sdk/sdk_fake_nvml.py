# ruff: noqa: N802  (the fake keeps pynvml's camelCase function names)
"""A fake ``pynvml`` whose GPUs follow a measured power-limit curve, on a fake clock.

The SDK's optimizer can only be tested honestly against a GPU that responds to
its power limit the way a real one does. This fake takes the response from the
Zeus A40 sweeps in ``lepton/data/gpu-power/summary_power_a40.csv``: at each
limit, a training step lasts the measured time and draws the measured power.
Time is a fake clock that only a training step moves, so a test "trains" for
minutes in milliseconds. The NVML error classes are the real ones from
``pynvml``, so the SDK's error handling is exercised as in production.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml

A40_SWEEP = Path("gpu-power") / "summary_power_a40.csv"
A40_DEFAULT_LIMIT_WATTS = 300.0
# One "epoch" of the sweep is cut into this many fake steps; any number works, it
# only sets the fake step time (tens of milliseconds, like a small real model).
STEPS_PER_EPOCH = 5000


@dataclass(frozen=True)
class PowerCurve:
    """Per power limit (W): seconds per step and average board power (W) while training."""

    points: dict[float, tuple[float, float]]

    @property
    def limits_watts(self) -> list[float]:
        return sorted(self.points)

    def _at(self, limit_watts: float) -> tuple[float, float]:
        limits = self.limits_watts
        limit_watts = min(max(limit_watts, limits[0]), limits[-1])
        if limit_watts in self.points:
            return self.points[limit_watts]
        upper = next(limit for limit in limits if limit > limit_watts)
        lower = max(limit for limit in limits if limit < limit_watts)
        t = (limit_watts - lower) / (upper - lower)
        (s0, w0), (s1, w1) = self.points[lower], self.points[upper]
        return s0 + t * (s1 - s0), w0 + t * (w1 - w0)

    def seconds_per_step(self, limit_watts: float) -> float:
        return self._at(limit_watts)[0]

    def watts(self, limit_watts: float) -> float:
        return self._at(limit_watts)[1]

    def joules_per_step(self, limit_watts: float) -> float:
        seconds, watts = self._at(limit_watts)
        return seconds * watts


def a40_sweeps(data_dir: Path) -> dict[str, dict[float, tuple[float, float]]]:
    """Every A40 workload of the sweep: limit -> (time per epoch s, average power W)."""
    runs: dict[str, dict[float, tuple[float, float]]] = defaultdict(dict)
    with (data_dir / A40_SWEEP).open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = "/".join((row["dataset"], row["network"], row["batch_size"], row["optimizer"]))
            runs[key][float(row["power_limit"])] = (
                float(row["time_per_epoch"]),
                float(row["average_power"]),
            )
    return dict(runs)


def workload_curve(run: dict[float, tuple[float, float]]) -> PowerCurve:
    """One measured workload as a per-step curve."""
    return PowerCurve(
        {limit: (seconds / STEPS_PER_EPOCH, watts) for limit, (seconds, watts) in run.items()}
    )


def median_a40_curve(data_dir: Path) -> PowerCurve:
    """The A40 curve: at each limit, the median over fully swept workloads of time and power.

    Both are normalised to each workload's own run at the default limit before
    the median, then scaled by the median workload's time and power there.
    """
    runs = a40_sweeps(data_dir)
    limits = sorted({limit for run in runs.values() for limit in run})
    complete = [run for run in runs.values() if all(limit in run for limit in limits)]
    base = A40_DEFAULT_LIMIT_WATTS
    base_seconds = statistics.median(run[base][0] for run in complete) / STEPS_PER_EPOCH
    base_watts = statistics.median(run[base][1] for run in complete)
    points = {}
    for limit in limits:
        time_ratio = statistics.median(run[limit][0] / run[base][0] for run in complete)
        power_ratio = statistics.median(run[limit][1] / run[base][1] for run in complete)
        points[limit] = (base_seconds * time_ratio, base_watts * power_ratio)
    return PowerCurve(points)


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@dataclass
class FakeGpu:
    """One fake board: its limits in mW and its energy counter in mJ."""

    index: int
    curve: PowerCurve
    uuid: str
    name: str = "NVIDIA A40"
    limit_mw: int = 0
    default_limit_mw: int = 0
    min_limit_mw: int = 0
    max_limit_mw: int = 0
    energy_mj: float = 0.0
    idle_watts: float = 30.0
    limit_history_watts: list[float] = field(default_factory=list)

    @property
    def limit_watts(self) -> float:
        return self.limit_mw / 1e3


class FakeNvml:
    """The subset of ``pynvml`` the SDK calls, over fake GPUs on a fake clock."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission
    NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound

    def __init__(
        self,
        curve: PowerCurve,
        clock: FakeClock | None = None,
        gpu_count: int = 1,
        *,
        energy_counter: bool = True,
        can_set_limits: bool = True,
        library_present: bool = True,
        default_limit_watts: float = A40_DEFAULT_LIMIT_WATTS,
    ) -> None:
        self.clock = clock or FakeClock()
        self.energy_counter = energy_counter
        self.can_set_limits = can_set_limits
        self.library_present = library_present
        self.initialised = False
        limits = curve.limits_watts
        self.gpus = [
            FakeGpu(
                index=i,
                curve=curve,
                uuid=f"GPU-0000000{i}-fake-a40",
                limit_mw=round(default_limit_watts * 1e3),
                default_limit_mw=round(default_limit_watts * 1e3),
                min_limit_mw=round(limits[0] * 1e3),
                max_limit_mw=round(limits[-1] * 1e3),
            )
            for i in range(gpu_count)
        ]
        self.steps = 0

    # -- the workload: what a training step does to the fake hardware --------------

    def run_step(self) -> None:
        """One training step on every GPU: time passes at the slowest GPU's pace."""
        seconds = max(gpu.curve.seconds_per_step(gpu.limit_watts) for gpu in self.gpus)
        for gpu in self.gpus:
            gpu.energy_mj += gpu.curve.watts(gpu.limit_watts) * seconds * 1e3
        self.clock.advance(seconds)
        self.steps += 1

    def idle(self, seconds: float) -> None:
        for gpu in self.gpus:
            gpu.energy_mj += gpu.idle_watts * seconds * 1e3
        self.clock.advance(seconds)

    # -- pynvml ----------------------------------------------------------------------

    def _error(self, code: int) -> Exception:
        error: Exception = pynvml.NVMLError(code)
        return error

    def nvmlInit(self) -> None:
        if not self.library_present:
            raise self._error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> bytes:
        return handle.name.encode()  # older bindings return bytes; the SDK takes both

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGpu) -> int:
        if not self.energy_counter:
            raise self._error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return int(handle.energy_mj)

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        return round(handle.curve.watts(handle.limit_watts) * 1e3)

    def nvmlDeviceGetPowerManagementLimit(self, handle: FakeGpu) -> int:
        return handle.limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: FakeGpu) -> int:
        return handle.default_limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: FakeGpu) -> list[int]:
        return [handle.min_limit_mw, handle.max_limit_mw]

    def nvmlDeviceSetPowerManagementLimit(self, handle: FakeGpu, limit_mw: Any) -> None:
        if not self.can_set_limits:
            raise self._error(pynvml.NVML_ERROR_NO_PERMISSION)
        if not handle.min_limit_mw <= int(limit_mw) <= handle.max_limit_mw:
            raise self._error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        handle.limit_mw = int(limit_mw)
        handle.limit_history_watts.append(handle.limit_mw / 1e3)
