"""A stand-in for the ``pynvml`` module, so the NVML backend is tested without a GPU.

It implements the calls the exporter makes, with NVML's units (mW, mJ, MHz)
and NVML's own exception classes from ``nvidia-ml-py``, so the code under test
catches exactly what it would catch on a real node. Tests script failures per
device and per call (a lost GPU, an unsupported reading, a missing
permission), advance a fake clock that drives the energy counter, and reload
the "driver" to reset counters. The benchmark and the GPU check's tests use it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pynvml

NVMLError = pynvml.NVMLError
NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM

ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
ERROR_NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
ERROR_GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
ERROR_FUNCTION_NOT_FOUND = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
ERROR_UNKNOWN = pynvml.NVML_ERROR_UNKNOWN


@dataclass
class Utilization:
    """NVML's ``nvmlUtilization_t`` (percent)."""

    gpu: int
    memory: int


@dataclass
class ProcessSample:
    """NVML's ``nvmlProcessUtilizationSample_t`` (percent)."""

    pid: int
    timeStamp: int  # noqa: N815 - NVML's field name
    smUtil: int  # noqa: N815 - NVML's field name
    memUtil: int = 0  # noqa: N815 - NVML's field name
    encUtil: int = 0  # noqa: N815 - NVML's field name
    decUtil: int = 0  # noqa: N815 - NVML's field name


@dataclass
class FakeGpu:
    """One fake device; the fields are what NVML would report, in NVML's units."""

    uuid: str
    name: str = "NVIDIA A40"
    power_mw: int = 30_000
    energy_mj: int = 0
    has_energy_counter: bool = True
    power_limit_mw: int = 300_000
    default_limit_mw: int = 300_000
    min_limit_mw: int = 100_000
    max_limit_mw: int = 300_000
    utilization_percent: int = 0
    temperature_celsius: int = 35
    sm_clock_mhz: int = 210
    # pid -> SM utilisation percent over the last sample period.
    processes: dict[int, int] = field(default_factory=dict)
    # call name (e.g. "nvmlDeviceGetPowerUsage") -> NVML error code it raises.
    failing_calls: dict[str, int] = field(default_factory=dict)
    lost: bool = False
    # A real driver rejects limits outside the constraints; this one can also
    # be told to accept a limit and silently keep the old one (the _v2 setter's bug).
    ignore_set_limit: bool = False
    # Fractional millijoules not yet visible in the integer counter.
    _energy_remainder_mj: float = 0.0


class FakeNvml:
    """The subset of ``pynvml`` the exporter uses, over a list of ``FakeGpu``."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM

    def __init__(self, gpus: list[FakeGpu], *, init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialized = False
        self.now_seconds = 1_000.0
        self.set_limit_calls: list[tuple[str, int]] = []

    # --- test controls -------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass at each GPU's current power, advancing energy counters."""
        self.now_seconds += seconds
        for gpu in self.gpus:
            exact = gpu.power_mw * seconds + gpu._energy_remainder_mj
            whole = int(exact)
            gpu._energy_remainder_mj = exact - whole
            gpu.energy_mj += whole

    def reload_driver(self) -> None:
        """A driver reload: energy counters restart at zero and limits return to default."""
        for gpu in self.gpus:
            gpu.energy_mj = 0
            gpu._energy_remainder_mj = 0.0
            gpu.power_limit_mw = gpu.default_limit_mw

    def clock(self) -> float:
        """The fake monotonic clock, for the backend's ``clock`` argument."""
        return self.now_seconds

    # --- helpers ----------------------------------------------------------
    def _check(self) -> None:
        if not self.initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: Any, call: str) -> FakeGpu:
        self._check()
        gpu: FakeGpu = handle
        if gpu.lost:
            raise pynvml.NVMLError(ERROR_GPU_IS_LOST)
        if call in gpu.failing_calls:
            raise pynvml.NVMLError(gpu.failing_calls[call])
        return gpu

    # --- the pynvml surface ----------------------------------------------------
    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's name
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        self._check()
        return "550.0-fake"

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:  # noqa: N802
        self._check()
        if index >= len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.lost:
            raise pynvml.NVMLError(ERROR_GPU_IS_LOST)
        return gpu

    def nvmlDeviceGetUUID(self, handle: Any) -> str:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption")
        if not gpu.has_energy_counter:
            raise pynvml.NVMLError(ERROR_NOT_SUPPORTED)
        return gpu.energy_mj

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetPowerManagementLimit").power_limit_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetPowerManagementDefaultLimit").default_limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetPowerManagementLimitConstraints")
        return [gpu.min_limit_mw, gpu.max_limit_mw]

    def nvmlDeviceSetPowerManagementLimit(self, handle: Any, limit_mw: int) -> None:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceSetPowerManagementLimit")
        self.set_limit_calls.append((gpu.uuid, int(limit_mw)))
        if not gpu.min_limit_mw <= limit_mw <= gpu.max_limit_mw:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if not gpu.ignore_set_limit:
            gpu.power_limit_mw = int(limit_mw)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Utilization:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        return Utilization(gpu=gpu.utilization_percent, memory=0)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetTemperature").temperature_celsius

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetClockInfo").sm_clock_mhz

    def nvmlDeviceGetProcessUtilization(  # noqa: N802
        self, handle: Any, last_seen_timestamp: int
    ) -> list[ProcessSample]:
        gpu = self._gpu(handle, "nvmlDeviceGetProcessUtilization")
        if not gpu.processes:
            # Real NVML reports "not found" when no sample is newer than the timestamp.
            raise pynvml.NVMLError(ERROR_NOT_FOUND)
        stamp = int(self.now_seconds * 1e6)
        return [
            ProcessSample(pid=pid, timeStamp=stamp, smUtil=sm) for pid, sm in gpu.processes.items()
        ]


def a40_fleet(count: int, *, prefix: str = "GPU-fake") -> FakeNvml:
    """``count`` idle fake A40s with energy counters, UUIDs ``{prefix}-0000`` and on."""
    return FakeNvml([FakeGpu(uuid=f"{prefix}-{i:04d}") for i in range(count)])
