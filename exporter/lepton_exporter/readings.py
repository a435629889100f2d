"""What a backend hands the exporter on each sample: readings and errors, no Prometheus.

The three backends (NVML, RAPL, model) read very different meters; the
accounting and the metrics only need these few shapes, so a backend can be
swapped or faked without touching what users scrape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCE_NVML = "nvml"
SOURCE_RAPL = "rapl"
SOURCE_MODEL = "model"


@dataclass(frozen=True, order=True)
class PodRef:
    """A container holding a device, as the kubelet's pod-resources API names it."""

    namespace: str
    pod: str
    container: str = ""


@dataclass
class GpuReading:
    """One GPU at one instant; None where the device could not say (error or unsupported)."""

    node: str
    uuid: str
    model: str
    source: str
    power_watts: float | None = None
    # The device's own cumulative energy counter (NVML: mJ since driver load, in J here);
    # None where the GPU has none, and the energy is integrated from power instead.
    energy_counter_joules: float | None = None
    power_limit_watts: float | None = None
    power_limit_min_watts: float | None = None
    power_limit_max_watts: float | None = None
    power_limit_default_watts: float | None = None
    utilization_ratio: float | None = None
    temperature_celsius: float | None = None
    sm_clock_hertz: float | None = None
    # Process id -> SM utilisation share (0..1) over the last sample period
    # (nvmlDeviceGetProcessUtilization since the previous sample's timestamp).
    process_sm_shares: dict[int, float] = field(default_factory=dict)
    # Process id -> GPU memory it holds (nvmlDeviceGetComputeRunningProcesses), in bytes;
    # the fallback weights when the driver gives no utilisation samples.
    process_memory_bytes: dict[int, float] = field(default_factory=dict)
    # The GPU's MIG instances when MIG mode is on (empty otherwise).
    mig_slices: tuple[MigSlice, ...] = ()
    # Compute slices of the whole board (7 on A100 and H100, 4 on A30).
    mig_total_slices: int = 7
    # Power the device draws with nothing running (from its profile), for the idle/active split.
    idle_watts: float = 0.0
    # Pods holding this GPU where the backend knows them itself (the model backend);
    # the NVML backend leaves this empty and the pod-resources API fills it.
    holders: tuple[PodRef, ...] = ()
    # Per-holder utilisation shares where the backend knows them (model backend).
    holder_shares: dict[PodRef, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MigSlice:
    """One MIG device of a GPU: its UUID (``MIG-…``), its size and the processes on it."""

    uuid: str
    gpu_instance_id: int
    slices: int  # compute slices of the board's ``GpuReading.mig_total_slices``
    profile: str  # "3g.40gb", from the MIG device's name
    pids: tuple[int, ...] = ()
    # pid -> memory held on this slice (bytes), for splitting a slice among its pods.
    process_memory_bytes: dict[int, float] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class CpuZoneReading:
    """One RAPL zone's cumulative energy counter."""

    node: str
    zone: str
    energy_microjoules: float
    max_energy_range_microjoules: float


@dataclass(frozen=True)
class DeviceError:
    """A failed read: which device, which call, and NVML's (or the OS's) error class."""

    node: str
    device: str
    source: str
    call: str
    error: str


@dataclass
class Sample:
    """Everything one backend saw in one pass over its devices."""

    source: str
    up: bool
    gpus: list[GpuReading] = field(default_factory=list)
    cpu_zones: list[CpuZoneReading] = field(default_factory=list)
    errors: list[DeviceError] = field(default_factory=list)
    # Devices that failed as a whole this pass (lost GPU), by node and device id.
    down_devices: list[tuple[str, str]] = field(default_factory=list)
