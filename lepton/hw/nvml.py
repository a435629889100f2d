"""The NVML calls Lepton makes, with NVML's pitfalls handled once.

The exporter samples every GPU of a node and applies power limits; the SDK reads
a GPU's energy counter and power and sets its limit. Both go through here.
NVML's sharp edges (``notes/energy-metering.md``):

- Units: energy is in millijoules (Volta and newer only), power and limits in
  milliwatts, clocks in MHz.
- Errors: every failure is an ``NVMLError`` subclass carrying NVML's code in
  ``value``; the codes are read from the ``pynvml`` module in use
  (``nvml.NVML_ERROR_NOT_SUPPORTED``…), never written down here, so a fake and
  the real bindings agree by construction.
- Names: older bindings return ``bytes`` from ``nvmlDeviceGetName`` and
  ``nvmlDeviceGetUUID``, current ones ``str``; :func:`as_text` takes both.
- **The power-limit setter:** nvidia-ml-py's ``_v2`` setter ignores NVML's return
  code, so :func:`set_power_limit_mw` uses the v1 call, which raises on failure,
  and reads the limit back, because a driver may also round or refuse a limit
  silently. Only a limit that reads back is reported as set.
- Devices are keyed by UUID because NVML's index order is not stable.

The ``pynvml`` module is passed in (tests drive :mod:`lepton.hw.fake_nvml`) and
imported lazily otherwise: the SDK runs in jobs where it may be missing.
"""

from __future__ import annotations

import importlib
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from lepton.core.errors import LeptonError
from lepton.core.metering import resetting_counter_delta
from lepton.core.names import RESOURCE_GPU

# NVML limits are integers in milliwatts; readings within a watt are the same limit.
LIMIT_TOLERANCE_WATTS = 1.0

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class NvmlUnavailableError(LeptonError, RuntimeError):
    """NVML cannot be used on this machine (no bindings, no library, no driver, no GPU)."""


class PowerLimitError(LeptonError, RuntimeError):
    """A GPU's power limit could not be set, or did not read back as set.

    ``call`` is the NVML call that failed (or ``verify_power_limit`` when the
    limit read back differs), ``label`` its error class (:func:`error_label`, or
    ``mismatch``), ``read_back_mw`` the limit the driver kept where known.
    """

    def __init__(
        self, message: str, *, call: str, label: str, read_back_mw: int | None = None
    ) -> None:
        super().__init__(message)
        self.call = call
        self.label = label
        self.read_back_mw = read_back_mw


def import_nvml() -> Any:
    """The real ``pynvml`` module (nvidia-ml-py); raises NvmlUnavailableError when missing."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as error:
        raise NvmlUnavailableError(
            f"the NVML bindings are not installed ({error}): pip install nvidia-ml-py"
        ) from None


def start_nvml(nvml: Any = None, *, remedy: str = "") -> Any:
    """Initialise NVML and return the module; raises NvmlUnavailableError saying why.

    ``remedy`` is the caller's own way out, appended to the message (the
    exporter's ``--backend model``).
    """
    if nvml is None:
        nvml = import_nvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as error:
        raise NvmlUnavailableError(
            f"NVML could not be initialised ({error_label(error)}: {error}): this machine "
            "has no NVIDIA driver or GPU, or the container runs without the NVIDIA runtime "
            "and its libnvidia-ml.so (the NVIDIA container toolkit mounts it: request "
            f"{RESOURCE_GPU} in the pod, or run with --gpus all){remedy}"
        ) from None
    return nvml


def error_label(error: BaseException) -> str:
    """A short snake_case label for an error: ``NVMLError_GpuIsLost`` -> ``gpu_is_lost``."""
    name = type(error).__name__
    if name.startswith("NVMLError_"):
        name = name[len("NVMLError_") :]
    elif name == "NVMLError":
        return f"nvml_{getattr(error, 'value', 'unknown')}"
    return _CAMEL.sub("_", name).lower()


def error_code(error: BaseException) -> int | None:
    """NVML's return code of an ``NVMLError`` (its ``value``), None for other errors."""
    value = getattr(error, "value", None)
    return value if isinstance(value, int) else None


def as_text(value: str | bytes) -> str:
    """A device name or UUID as text, whichever the bindings returned."""
    return value.decode() if isinstance(value, bytes) else str(value)


def set_power_limit_mw(
    nvml: Any,
    handle: Any,
    limit_mw: int,
    *,
    uuid: str,
    tolerance_watts: float = LIMIT_TOLERANCE_WATTS,
) -> int:
    """Set a GPU's power limit with the v1 setter and return the limit read back (mW).

    Raises PowerLimitError when the setter or the read-back fails, or when the
    limit read back is ``tolerance_watts`` or more away from ``limit_mw``.
    """
    watts = limit_mw / 1e3
    try:
        nvml.nvmlDeviceSetPowerManagementLimit(handle, limit_mw)
    except nvml.NVMLError as error:
        call, label = "nvmlDeviceSetPowerManagementLimit", error_label(error)
        if error_code(error) == nvml.NVML_ERROR_NO_PERMISSION:
            message = (
                f"GPU {uuid}: setting the power limit needs root or CAP_SYS_ADMIN; run the "
                "container with securityContext.capabilities.add: [SYS_ADMIN] (or as root)"
            )
        else:
            message = (
                f"GPU {uuid}: could not set the power limit to {watts:.0f} W ({error}); "
                "check the limit lies within nvidia-smi -q -d POWER's min and max"
            )
        raise PowerLimitError(message, call=call, label=label) from None
    try:
        read_back_mw = int(nvml.nvmlDeviceGetPowerManagementLimit(handle))
    except nvml.NVMLError as error:
        raise PowerLimitError(
            f"GPU {uuid}: the power limit was set but could not be read back ({error})",
            call="nvmlDeviceGetPowerManagementLimit",
            label=error_label(error),
        ) from None
    if abs(read_back_mw - limit_mw) >= tolerance_watts * 1e3:
        raise PowerLimitError(
            f"GPU {uuid}: asked for a {watts:.0f} W limit, the driver kept "
            f"{read_back_mw / 1e3:.0f} W; another tool may be managing the limit",
            call="verify_power_limit",
            label="mismatch",
            read_back_mw=read_back_mw,
        )
    return read_back_mw


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
            except self.nvml.NVMLError as error:
                if error_code(error) != self.nvml.NVML_ERROR_NOT_SUPPORTED:
                    raise
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
        """Set the power limit and return the limit read back, in watts (see the module)."""
        return set_power_limit_mw(self.nvml, self.handle, round(watts * 1e3), uuid=self.uuid) / 1e3


def open_gpus(nvml: Any = None) -> list[NvmlGpu]:
    """Every GPU NVML sees, in index order; raises NvmlUnavailableError when none."""
    nvml = start_nvml(nvml)
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
                    uuid=as_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=as_text(nvml.nvmlDeviceGetName(handle)),
                )
            )
    except nvml.NVMLError as error:
        raise NvmlUnavailableError(f"NVML started but listing GPUs failed ({error})") from None
    if not gpus:
        raise NvmlUnavailableError(
            f"NVML started but sees no GPU: request {RESOURCE_GPU} for this container"
        )
    return gpus
