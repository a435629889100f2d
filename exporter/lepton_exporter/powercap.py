"""Applies the GPU power limits Lepton decides, and takes them back when the pods leave.

A LeptonJob's ``powerCap`` (copied to its pods as ``lepton.dev/power-cap``)
and an exhausted budget's ``CapPower`` (the operator writes
``lepton.dev/power-limit-watts`` on the budget's running pods) both end here,
on the node that holds the GPUs. NVML limits need root or CAP_SYS_ADMIN, so
this is opt-in. Every limit is set through :func:`lepton.hw.nvml.set_power_limit_mw`
(the v1 setter, then read back), and only a limit that reads back is reported
as applied. Limits do not survive a driver reload and Lepton only restores
limits it set itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lepton.core.names import ANNOTATION_POWER_CAP, ANNOTATION_POWER_LIMIT_WATTS
from lepton.core.profiles import get_profile
from lepton.hw.nvml import LIMIT_TOLERANCE_WATTS, PowerLimitError, error_label, set_power_limit_mw
from lepton_exporter.accounting import Accountant
from lepton_exporter.readings import SOURCE_NVML, DeviceError, GpuReading, PodRef

log = logging.getLogger(__name__)


AnnotationsFor = Callable[[PodRef], Mapping[str, str]]


def requested_cap_watts(annotations: Mapping[str, str], gpu_model: str) -> float | None:
    """The limit one pod asks for: the lower of its job's ``powerCap`` and its budget's cap.

    ``Auto`` is the profile's energy-optimal limit, ``None`` (or no
    annotation) asks for nothing, a number is watts; unreadable values ask
    for nothing rather than guess.
    """
    caps: list[float] = []
    job_cap = annotations.get(ANNOTATION_POWER_CAP)
    if job_cap == "Auto":
        caps.append(float(get_profile(gpu_model).energy_optimal_power_limit_watts))
    elif job_cap not in (None, "None"):
        try:
            caps.append(float(job_cap))
        except ValueError:
            log.warning("unreadable power cap", extra={"value": job_cap})
    budget_cap = annotations.get(ANNOTATION_POWER_LIMIT_WATTS)
    if budget_cap is not None:
        try:
            caps.append(float(budget_cap))
        except ValueError:
            log.warning("unreadable budget power cap", extra={"value": budget_cap})
    positive = [c for c in caps if c > 0]
    return min(positive) if positive else None


def desired_limit_watts(
    reading: GpuReading, holders: Sequence[PodRef], annotations_for: AnnotationsFor
) -> float | None:
    """The limit a GPU should have: the lowest its pods ask for, within what the GPU accepts.

    None means "no pod asks": the GPU goes back to its default limit.
    """
    asked = [
        cap
        for pod in holders
        if (cap := requested_cap_watts(annotations_for(pod), reading.model)) is not None
    ]
    if not asked:
        return None
    cap = min(asked)
    if reading.power_limit_min_watts is not None:
        cap = max(cap, reading.power_limit_min_watts)
    if reading.power_limit_max_watts is not None:
        cap = min(cap, reading.power_limit_max_watts)
    return cap


class PowerCapper:
    """Sets, verifies and restores NVML power limits on one node's GPUs."""

    def __init__(self, nvml: Any, handle_for_uuid: Callable[[str], Any], node: str) -> None:
        self.nvml = nvml
        self.handle_for_uuid = handle_for_uuid
        self.node = node
        # uuid -> the limit Lepton set and verified (watts).
        self.capped: dict[str, float] = {}

    def reconcile(
        self,
        readings: Sequence[GpuReading],
        holders: Mapping[str, Sequence[PodRef]],
        annotations_for: AnnotationsFor,
        accountant: Accountant,
    ) -> None:
        """Bring every GPU's limit to what its pods ask for; never raises for one GPU."""
        for reading in readings:
            desired = desired_limit_watts(reading, holders.get(reading.uuid, ()), annotations_for)
            if desired is not None:
                if self._set(reading, desired, accountant):
                    self.capped[reading.uuid] = desired
                    accountant.set_power_cap(self.node, reading.uuid, desired)
            elif reading.uuid in self.capped and self.restore(reading.uuid, accountant):
                accountant.set_power_cap(self.node, reading.uuid, None)

    def restore(self, uuid: str, accountant: Accountant) -> bool:
        """Put a GPU Lepton capped back to its default limit."""
        try:
            handle = self.handle_for_uuid(uuid)
            default_mw = int(self.nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle))
        except (self.nvml.NVMLError, KeyError) as error:
            self._fail(accountant, uuid, "nvmlDeviceGetPowerManagementDefaultLimit", error)
            return False
        if self._write_and_verify(handle, uuid, default_mw, accountant):
            self.capped.pop(uuid, None)
            log.info("power limit restored", extra={"gpu_uuid": uuid, "watts": default_mw / 1000})
            return True
        return False

    def restore_all(self, accountant: Accountant) -> None:
        """Restore every GPU Lepton capped (on shutdown)."""
        for uuid in list(self.capped):
            if self.restore(uuid, accountant):
                accountant.set_power_cap(self.node, uuid, None)

    def _set(self, reading: GpuReading, watts: float, accountant: Accountant) -> bool:
        current = reading.power_limit_watts
        if (
            reading.uuid in self.capped
            and current is not None
            and abs(current - watts) < LIMIT_TOLERANCE_WATTS
        ):
            return True
        try:
            handle = self.handle_for_uuid(reading.uuid)
        except (self.nvml.NVMLError, KeyError) as error:
            self._fail(accountant, reading.uuid, "nvmlDeviceGetHandleByIndex", error)
            return False
        ok = self._write_and_verify(handle, reading.uuid, round(watts * 1000), accountant)
        if ok:
            log.info("power limit set", extra={"gpu_uuid": reading.uuid, "watts": watts})
        return ok

    def _write_and_verify(
        self, handle: Any, uuid: str, limit_mw: int, accountant: Accountant
    ) -> bool:
        try:
            set_power_limit_mw(self.nvml, handle, limit_mw, uuid=uuid)
        except PowerLimitError as error:
            accountant.count_error(
                DeviceError(self.node, uuid, SOURCE_NVML, error.call, error.label)
            )
            if error.read_back_mw is not None:
                log.warning(
                    "power limit did not take",
                    extra={
                        "gpu_uuid": uuid,
                        "asked_mw": limit_mw,
                        "read_back_mw": error.read_back_mw,
                    },
                )
            else:
                log.warning("power limit call failed", extra={"gpu_uuid": uuid, "call": error.call})
            return False
        return True

    def _fail(self, accountant: Accountant, uuid: str, call: str, error: BaseException) -> None:
        label = error_label(error) if isinstance(error, self.nvml.NVMLError) else "not_found"
        accountant.count_error(DeviceError(self.node, uuid, SOURCE_NVML, call, label))
        log.warning("power limit call failed", extra={"gpu_uuid": uuid, "call": call})
