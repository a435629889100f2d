"""A testing module: the one stand-in for ``pynvml``, for the exporter's and the SDK's tests.

**Not for production paths** (an import-linter contract keeps every component
and the SDK from importing it); tests, benchmarks and demos use it to run the
NVML code without a GPU.

It implements the calls Lepton makes, with NVML's units (mW, mJ, MHz), NVML's
return types as current ``nvidia-ml-py`` gives them (``str`` names and UUIDs),
and ``pynvml``'s own exception classes and constants (every ``NVML_*`` and
``NVMLError*`` of the real module is an attribute of :class:`FakeNvml`), so the
code under test catches exactly what it would catch on a real node.

Two ways to drive it:

- **Scripted devices** (the exporter's tests): a list of :class:`FakeGpu` with
  their power, processes and MIG layout; failures per device and per call (a
  lost GPU, an unsupported reading, a missing permission); :meth:`FakeNvml.advance`
  moves the fake clock and the energy counters, :meth:`FakeNvml.reload_driver`
  resets them.
- **A measured power curve** (the SDK's tests, :func:`curve_fleet`): each GPU
  follows a :class:`PowerCurve`, at each power limit a training step lasts the
  measured time and draws the measured power (the Zeus A40 sweeps in
  ``lepton/data/gpu-power/summary_power_a40.csv``); :meth:`FakeNvml.run_step`
  and :meth:`FakeNvml.idle` move the clock, so a test "trains" for minutes in
  milliseconds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml

from lepton.core.profiles import get_profile
from lepton.data.sweeps import SWEEPS, read_sweep

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


A40_DEFAULT_LIMIT_WATTS = SWEEPS["A40"][1]
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
    return {"/".join(key): run for key, run in read_sweep("A40", data_dir).items()}


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


def profile_curve(
    model: str, *, a40_seconds_per_step: float = 0.05, step_watts: float = 25.0
) -> PowerCurve:
    """A GPU profile's response to its power limit (lepton/core/gpu_profiles) as a curve.

    At every ``step_watts`` between the profile's lowest and highest limit (both
    included, and its energy-optimal limit), a step lasts ``a40_seconds_per_step``
    over the profile's speed there and the board draws the profile's busy power there.
    """
    profile = get_profile(model)
    low, high = profile.min_power_limit_watts, profile.max_power_limit_watts
    limits = {low, high, profile.energy_optimal_power_limit_watts}
    watts = math.ceil(low / step_watts) * step_watts
    while watts < high:
        limits.add(watts)
        watts += step_watts
    return PowerCurve(
        {
            limit: (a40_seconds_per_step / profile.speed_at(limit), profile.busy_power_at(limit))
            for limit in sorted(limits)
        }
    )


class FakeClock:
    """Monotonic seconds that move only when told to; call it for the time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


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
    # A measured response to the power limit (curve_fleet): power follows the curve at the
    # current limit instead of power_mw, and run_step() lasts the curve's step time.
    curve: PowerCurve | None = None
    # Drawn between steps by FakeNvml.idle().
    idle_watts: float = 30.0
    # Every limit set, in watts, in order.
    limit_history_watts: list[float] = field(default_factory=list)
    # Fractional millijoules not yet visible in the integer counter.
    _energy_remainder_mj: float = 0.0

    @property
    def limit_watts(self) -> float:
        return self.power_limit_mw / 1e3

    @property
    def power_watts(self) -> float:
        """What the board draws now: the curve's power at the current limit, else power_mw."""
        if self.curve is not None:
            return self.curve.watts(self.limit_watts)
        return self.power_mw / 1e3

    def add_energy(self, joules: float) -> None:
        """Move the integer millijoule counter by ``joules``, keeping the fraction for later."""
        exact = joules * 1e3 + self._energy_remainder_mj
        whole = int(exact)
        self._energy_remainder_mj = exact - whole
        self.energy_mj += whole


class FakeNvml:
    """The subset of ``pynvml`` Lepton uses, over a list of ``FakeGpu`` on a fake clock.

    Every ``NVML_*`` constant and ``NVMLError*`` class of the real ``pynvml`` is an
    attribute too (set below the class), as on the module.
    """

    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        init_error: int | None = None,
        clock: FakeClock | None = None,
    ) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialized = False
        # Callable: pass ``fake.clock`` wherever the code under test takes a clock.
        self.clock = clock or FakeClock()
        self.set_limit_calls: list[tuple[str, int]] = []
        self.steps = 0

    @property
    def now_seconds(self) -> float:
        return self.clock.now

    # --- test controls -------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass at each GPU's current power, advancing energy counters."""
        self.clock.advance(seconds)
        for gpu in self.gpus:
            if gpu.processes and seconds > 0:
                gpu.samples.append((int(self.now_seconds * 1e6), dict(gpu.processes)))
                del gpu.samples[:-200]
            gpu.add_energy(gpu.power_watts * seconds)

    def run_step(self) -> None:
        """One training step on every GPU: time passes at the slowest GPU's curve."""
        seconds = max(gpu.curve.seconds_per_step(gpu.limit_watts) for gpu in self.gpus if gpu.curve)
        for gpu in self.gpus:
            gpu.add_energy(gpu.power_watts * seconds)
        self.clock.advance(seconds)
        self.steps += 1

    def idle(self, seconds: float) -> None:
        """``seconds`` with nothing running: every GPU draws its ``idle_watts``."""
        for gpu in self.gpus:
            gpu.add_energy(gpu.idle_watts * seconds)
        self.clock.advance(seconds)

    def reload_driver(self) -> None:
        """A driver reload: energy counters restart at zero and limits return to default."""
        for gpu in self.gpus:
            gpu.energy_mj = 0
            gpu._energy_remainder_mj = 0.0
            gpu.power_limit_mw = gpu.default_limit_mw

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
        return round(self._gpu(handle, "nvmlDeviceGetPowerUsage").power_watts * 1e3)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption")
        if not gpu.has_energy_counter:
            raise pynvml.NVMLError(ERROR_NOT_SUPPORTED)
        return int(gpu.energy_mj)

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
            gpu.limit_history_watts.append(gpu.limit_watts)

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


for _name in dir(pynvml):
    if _name.startswith(("NVML_", "NVMLError")):
        setattr(FakeNvml, _name, getattr(pynvml, _name))


def a40_fleet(count: int, *, prefix: str = "GPU-fake") -> FakeNvml:
    """``count`` idle fake A40s with energy counters, UUIDs ``{prefix}-0000`` and on."""
    return FakeNvml([FakeGpu(uuid=f"{prefix}-{i:04d}") for i in range(count)])


def curve_fleet(
    curve: PowerCurve,
    gpu_count: int = 1,
    *,
    clock: FakeClock | None = None,
    energy_counter: bool = True,
    can_set_limits: bool = True,
    library_present: bool = True,
    default_limit_watts: float = A40_DEFAULT_LIMIT_WATTS,
    name: str = "NVIDIA A40",
    idle_watts: float = 30.0,
) -> FakeNvml:
    """``gpu_count`` A40s that follow ``curve``, at ``default_limit_watts``, on a fake clock.

    Their limits range over the curve's; ``can_set_limits=False`` makes the setter
    answer NoPermission, ``library_present=False`` makes nvmlInit answer LibraryNotFound.
    """
    limits = curve.limits_watts
    gpus = [
        FakeGpu(
            uuid=f"GPU-0000000{i}-fake-a40",
            name=name,
            idle_watts=idle_watts,
            curve=curve,
            has_energy_counter=energy_counter,
            power_limit_mw=round(default_limit_watts * 1e3),
            default_limit_mw=round(default_limit_watts * 1e3),
            min_limit_mw=round(limits[0] * 1e3),
            max_limit_mw=round(limits[-1] * 1e3),
            failing_calls=(
                {} if can_set_limits else {"nvmlDeviceSetPowerManagementLimit": ERROR_NO_PERMISSION}
            ),
        )
        for i in range(gpu_count)
    ]
    init_error = None if library_present else ERROR_LIBRARY_NOT_FOUND
    return FakeNvml(gpus, init_error=init_error, clock=clock)


def profile_fleet(model: str, gpu_count: int = 1, *, clock: FakeClock | None = None) -> FakeNvml:
    """``gpu_count`` GPUs of a profiled model that follow :func:`profile_curve`.

    They start at the profile's default (highest) limit, are named as NVML names the
    model's boards (``NVIDIA H100 80GB HBM3``, from the profile's first product label)
    and idle at the profile's idle power.
    """
    profile = get_profile(model)
    return curve_fleet(
        profile_curve(model),
        gpu_count,
        clock=clock,
        default_limit_watts=profile.max_power_limit_watts,
        name=profile.product_names[0].replace("-", " "),
        idle_watts=profile.idle_watts,
    )
