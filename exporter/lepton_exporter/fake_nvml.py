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
class ProcessInfo:
    """NVML's ``nvmlProcessInfo_t`` as pynvml returns it (usedGpuMemory in bytes, or None)."""

    pid: int
    usedGpuMemory: int | None  # noqa: N815 - NVML's field name
    gpuInstanceId: int = 0xFFFFFFFF  # noqa: N815 - NVML's field name
    computeInstanceId: int = 0xFFFFFFFF  # noqa: N815 - NVML's field name


@dataclass
class DeviceAttributes:
    """The part of NVML's ``nvmlDeviceAttributes_t`` the exporter reads."""

    gpuInstanceSliceCount: int  # noqa: N815 - NVML's field name
    multiprocessorCount: int = 0  # noqa: N815 - NVML's field name


@dataclass
class FakeMigDevice:
    """One MIG device (a GPU instance with one compute instance) of a fake GPU."""

    uuid: str
    gpu_instance_id: int
    slices: int
    name: str
    # pid -> GPU memory in bytes, as nvmlDeviceGetComputeRunningProcesses lists them.
    running: dict[int, int] = field(default_factory=dict)


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
    # pid -> GPU memory in bytes (nvmlDeviceGetComputeRunningProcesses); None: ``processes``'
    # pids, with no memory reported.
    running: dict[int, int] | None = None
    # MIG: None where the GPU has no MIG (nvmlDeviceGetMigMode raises NotSupported),
    # else the current mode (1 enabled) and the devices in their slots (None: an empty slot).
    mig_mode: int | None = None
    mig_devices: list[FakeMigDevice | None] = field(default_factory=list)
    max_mig_devices: int = 7
    # (timestamp in microseconds, pid -> SM percent): one utilisation sample per advance(),
    # read back through nvmlDeviceGetProcessUtilization's timestamp cursor.
    samples: list[tuple[int, dict[int, int]]] = field(default_factory=list)
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
            if gpu.processes and seconds > 0:
                gpu.samples.append((int(self.now_seconds * 1e6), dict(gpu.processes)))
                del gpu.samples[:-200]
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
        if isinstance(handle, FakeMigDevice):
            raise pynvml.NVMLError(ERROR_NOT_SUPPORTED)  # board-level calls on a MIG handle
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
        if isinstance(handle, FakeMigDevice):
            self._check()
            return handle.uuid
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:  # noqa: N802
        if isinstance(handle, FakeMigDevice):
            self._check()
            return handle.name
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
        if gpu.mig_mode == 1:
            raise pynvml.NVMLError(ERROR_NOT_SUPPORTED)  # no per-process samples in MIG mode
        found = [
            ProcessSample(pid=pid, timeStamp=stamp, smUtil=sm)
            for stamp, processes in gpu.samples
            if stamp > last_seen_timestamp
            for pid, sm in processes.items()
        ]
        if not found:
            # Real NVML reports "not found" when no sample is newer than the timestamp.
            raise pynvml.NVMLError(ERROR_NOT_FOUND)
        return found

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[ProcessInfo]:  # noqa: N802
        if isinstance(handle, FakeMigDevice):
            self._check()
            return [
                ProcessInfo(pid, used, handle.gpu_instance_id, 0)
                for pid, used in handle.running.items()
            ]
        gpu = self._gpu(handle, "nvmlDeviceGetComputeRunningProcesses")
        if gpu.running is None:
            return [ProcessInfo(pid, None) for pid in gpu.processes]
        return [ProcessInfo(pid, used) for pid, used in gpu.running.items()]

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetMigMode")
        if gpu.mig_mode is None:
            raise pynvml.NVMLError(ERROR_NOT_SUPPORTED)
        return [gpu.mig_mode, gpu.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetMaxMigDeviceCount")
        if gpu.mig_mode is None:
            raise pynvml.NVMLError(ERROR_NOT_SUPPORTED)
        return gpu.max_mig_devices

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        if gpu.mig_mode != 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if index >= gpu.max_mig_devices:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        device = gpu.mig_devices[index] if index < len(gpu.mig_devices) else None
        if device is None:
            raise pynvml.NVMLError(ERROR_NOT_FOUND)
        return device

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:  # noqa: N802
        self._check()
        if not isinstance(handle, FakeMigDevice):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle.gpu_instance_id

    def nvmlDeviceGetAttributes(self, handle: Any) -> DeviceAttributes:  # noqa: N802
        self._check()
        if isinstance(handle, FakeMigDevice):
            return DeviceAttributes(gpuInstanceSliceCount=handle.slices)
        gpu = self._gpu(handle, "nvmlDeviceGetAttributes")
        return DeviceAttributes(gpuInstanceSliceCount=gpu.max_mig_devices)


def mig_gpu(
    uuid: str, layout: list[tuple[int, str]], name: str = "NVIDIA A100-SXM4-80GB"
) -> FakeGpu:
    """A GPU in MIG mode with one MIG device per (slices, profile) of ``layout``, in order.

    The MIG devices' UUIDs are ``MIG-<uuid>-<slot>``.
    """
    devices: list[FakeMigDevice | None] = [
        FakeMigDevice(
            uuid=f"MIG-{uuid.removeprefix('GPU-')}-{slot}",
            gpu_instance_id=slot + 1,
            slices=slices,
            name=f"{name} MIG {profile}",
        )
        for slot, (slices, profile) in enumerate(layout)
    ]
    return FakeGpu(uuid=uuid, name=name, mig_mode=1, mig_devices=devices, power_mw=80_000)


def a40_fleet(count: int, *, prefix: str = "GPU-fake") -> FakeNvml:
    """``count`` idle fake A40s with energy counters, UUIDs ``{prefix}-0000`` and on."""
    return FakeNvml([FakeGpu(uuid=f"{prefix}-{i:04d}") for i in range(count)])
