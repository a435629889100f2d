"""The few NVML calls the SDK makes, with NVML's pitfalls handled once.

The SDK reads a GPU's energy counter and power, and sets its power limit. NVML
has sharp edges for each: energy is in millijoules and exists only on Volta and
newer, power and limits are in milliwatts, the ``_v2`` limit setter in
nvidia-ml-py ignores its return code (so the v1 call is used and the limit read back),
and every failure is its own exception class. Devices are keyed by UUID because
NVML's index order is not stable. The ``pynvml`` module is passed in, so tests
drive a fake one.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Any

from lepton.core.metering import resetting_counter_delta


class NvmlUnavailableError(RuntimeError):
    """NVML cannot be used on this machine (no library, no driver, no GPU)."""


class PowerLimitError(RuntimeError):
    """A GPU's power limit could not be set."""


def load_nvml(nvml: Any = None) -> Any:
    """Initialise NVML and return the module; raises NvmlUnavailableError saying why."""
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as error:
            raise NvmlUnavailableError(
                f"the NVML bindings are not installed ({error}): pip install nvidia-ml-py"
            ) from None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as error:
        raise NvmlUnavailableError(
            f"NVML could not start ({error}): this machine has no NVIDIA driver or GPU, "
            "or the container was started without the NVIDIA runtime "
            "(request nvidia.com/gpu in the pod, or run with --gpus all)"
        ) from None
    return nvml


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class NvmlGpu:
    """One GPU as NVML sees it: energy, power and power limits in SI units."""

    nvml: Any
    handle: Any
    index: int
    uuid: str
    name: str
    _energy_supported: bool | None = field(default=None, repr=False)
    _last_energy_mj: int | None = field(default=None, repr=False)
    _energy_total_mj: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def has_energy_counter(self) -> bool:
        """Whether NVML keeps an energy counter for this GPU (Volta and newer)."""
        if self._energy_supported is None:
            try:
                self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
                self._energy_supported = True
            except self.nvml.NVMLError_NotSupported:
                self._energy_supported = False
        return self._energy_supported

    def energy_joules_total(self) -> float:
        """Joules spent since the first read, across driver reloads (mJ counter)."""
        with self._lock:
            current = int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
            if self._last_energy_mj is not None:
                self._energy_total_mj += resetting_counter_delta(self._last_energy_mj, current)
            self._last_energy_mj = current
            return self._energy_total_mj / 1e3

    def power_watts(self) -> float:
        """Board power draw (NVML averages it over one second on most Ampere parts)."""
        return int(self.nvml.nvmlDeviceGetPowerUsage(self.handle)) / 1e3

    def power_limit_watts(self) -> float:
        """The power limit set now."""
        return int(self.nvml.nvmlDeviceGetPowerManagementLimit(self.handle)) / 1e3

    def default_power_limit_watts(self) -> float:
        """The limit the GPU runs at when nobody changed it."""
        return int(self.nvml.nvmlDeviceGetPowerManagementDefaultLimit(self.handle)) / 1e3

    def power_limit_range_watts(self) -> tuple[float, float]:
        """The lowest and highest limit the driver accepts for this GPU."""
        low_mw, high_mw = self.nvml.nvmlDeviceGetPowerManagementLimitConstraints(self.handle)
        return int(low_mw) / 1e3, int(high_mw) / 1e3

    def set_power_limit_watts(self, watts: float) -> float:
        """Set the power limit and return the limit read back, in watts.

        Uses the v1 setter, which raises on failure, and reads the limit back
        because a driver may round or refuse it silently.
        """
        target_mw = round(watts * 1e3)
        try:
            self.nvml.nvmlDeviceSetPowerManagementLimit(self.handle, target_mw)
        except self.nvml.NVMLError_NoPermission:
            raise PowerLimitError(
                f"GPU {self.uuid}: setting the power limit needs root or CAP_SYS_ADMIN; "
                "run the container with securityContext.capabilities.add: [SYS_ADMIN] "
                "(or as root), or train without LeptonEngine.optimize"
            ) from None
        except self.nvml.NVMLError as error:
            raise PowerLimitError(
                f"GPU {self.uuid}: could not set the power limit to {watts:.0f} W ({error}); "
                "check the limit lies within nvidia-smi -q -d POWER's min and max"
            ) from None
        read_back_mw = int(self.nvml.nvmlDeviceGetPowerManagementLimit(self.handle))
        if abs(read_back_mw - target_mw) > 1000:
            raise PowerLimitError(
                f"GPU {self.uuid}: asked for a {watts:.0f} W limit, the driver kept "
                f"{read_back_mw / 1e3:.0f} W; another tool may be managing the limit"
            )
        return read_back_mw / 1e3


def open_gpus(nvml: Any = None) -> list[NvmlGpu]:
    """Every GPU NVML sees, in index order; raises NvmlUnavailableError when none."""
    nvml = load_nvml(nvml)
    try:
        count = int(nvml.nvmlDeviceGetCount())
        gpus: list[NvmlGpu] = []
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                NvmlGpu(
                    nvml=nvml,
                    handle=handle,
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                )
            )
    except nvml.NVMLError as error:
        raise NvmlUnavailableError(f"NVML started but listing GPUs failed ({error})") from None
    if not gpus:
        raise NvmlUnavailableError(
            "NVML started but sees no GPU: request nvidia.com/gpu for this container"
        )
    return gpus
