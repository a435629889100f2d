"""The NVML backend: reads each GPU's own meters through ``nvidia-ml-py``.

The NVML pitfalls (units, error codes, names as bytes or text, the setter) are
handled once, in :mod:`lepton.hw.nvml`; this module turns a node's devices into
the exporter's readings.

A GPU node loses devices (Xid errors, "GPU is lost"), runs old parts without
an energy counter, and denies calls to unprivileged containers. None of that
may take the exporter down or blank the other GPUs: every call is wrapped, a
failure is recorded against its device and call, and a call a device does not
support is asked once, then skipped. Devices are keyed by UUID because NVML's
index order is not stable (notes/energy-metering.md).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

from lepton.core.profiles import get_profile
from lepton.hw.nvml import NvmlUnavailableError, as_text, error_code, error_label, start_nvml
from lepton_exporter.readings import SOURCE_NVML, DeviceError, GpuReading, MigSlice, Sample

log = logging.getLogger(__name__)

# A100 and H100 have 7 compute slices; used where the driver cannot say.
DEFAULT_MIG_SLICES = 7
# Calls most parts do not support by design: not an error worth a series.
_EXPECTED_UNSUPPORTED = frozenset({"nvmlDeviceGetMigMode"})
_MIG_PROFILE = re.compile(r"(\d+g\.\d+gb(?:\+\w+)?)")


class _DeviceLostError(Exception):
    """Internal: the device failed as a whole; stop reading it this pass."""


def profile_idle_watts(model: str) -> float:
    """The profile's idle power for an NVML device name ("NVIDIA A40"); the profile
    module answers unknown models with its conservative default."""
    return float(get_profile(model).idle_watts)


class NvmlBackend:
    """Samples every GPU NVML sees; one instance per node."""

    source = SOURCE_NVML

    def __init__(self, nvml: Any, node: str) -> None:
        self.nvml = nvml
        self.node = node
        self.initialized = False
        self._unsupported: dict[str, set[str]] = {}
        self._uuid_by_index: dict[int, str] = {}
        self._model_by_uuid: dict[str, str] = {}
        self._last_process_timestamp: dict[str, int] = {}
        self._mig_by_slot: dict[tuple[str, int], MigSlice] = {}

    # --- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        """Initialise NVML; raises NvmlUnavailableError with the fix when there is no GPU stack."""
        start_nvml(self.nvml, remedy="; or use --backend model on nodes without GPUs")
        self.initialized = True

    def stop(self) -> None:
        if self.initialized:
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlShutdown()
            self.initialized = False

    # --- sampling -----------------------------------------------------------------
    def read(self) -> Sample:
        """One pass over all devices; never raises for a device's failure."""
        sample = Sample(source=self.source, up=True)
        if not self.initialized:
            try:
                self.start()
            except NvmlUnavailableError as error:
                log.warning("nvml unavailable", extra={"error": str(error)})
                sample.up = False
                sample.errors.append(
                    DeviceError(self.node, "", self.source, "nvmlInit", "unavailable")
                )
                return sample
        try:
            count = int(self.nvml.nvmlDeviceGetCount())
        except self.nvml.NVMLError as error:
            # A driver reload or unload: re-initialise next pass, counters reset then.
            sample.up = False
            sample.errors.append(
                DeviceError(self.node, "", self.source, "nvmlDeviceGetCount", error_label(error))
            )
            self.stop()
            return sample
        for index in range(count):
            reading = self._read_device(index, sample)
            if reading is not None:
                sample.gpus.append(reading)
        return sample

    def handle_for_uuid(self, uuid: str) -> Any:
        """The NVML handle of the device with ``uuid`` (for the power capper)."""
        for index, known in self._uuid_by_index.items():
            if known == uuid:
                return self.nvml.nvmlDeviceGetHandleByIndex(index)
        raise KeyError(f"GPU {uuid} is not on node {self.node}")

    def _read_device(self, index: int, sample: Sample) -> GpuReading | None:
        device_id = self._uuid_by_index.get(index, f"index-{index}")

        def fail(call: str, error: BaseException) -> None:
            sample.errors.append(
                DeviceError(self.node, device_id, self.source, call, error_label(error))
            )

        try:
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = as_text(self.nvml.nvmlDeviceGetUUID(handle))
        except self.nvml.NVMLError as error:
            fail("nvmlDeviceGetHandleByIndex", error)
            sample.down_devices.append((self.node, device_id))
            return None
        if self._uuid_by_index.get(index) != uuid:
            self._uuid_by_index[index] = uuid
            self._unsupported.pop(uuid, None)
        device_id = uuid
        unsupported = self._unsupported.setdefault(uuid, set())

        def ask(call: str, *args: Any) -> Any:
            if call in unsupported:
                return None
            try:
                return getattr(self.nvml, call)(handle, *args)
            except self.nvml.NVMLError as error:
                value, nvml = error_code(error), self.nvml
                if value == nvml.NVML_ERROR_NOT_FOUND and call == "nvmlDeviceGetProcessUtilization":
                    return []  # no process sampled since the last call: nothing ran
                if value == nvml.NVML_ERROR_NOT_SUPPORTED and call in _EXPECTED_UNSUPPORTED:
                    unsupported.add(call)
                    return None
                fail(call, error)
                if value == nvml.NVML_ERROR_NOT_SUPPORTED:
                    unsupported.add(call)
                if value == nvml.NVML_ERROR_GPU_IS_LOST:
                    raise _DeviceLostError from error
                return None

        try:
            model = self._model_by_uuid.get(uuid)
            if model is None:
                name = ask("nvmlDeviceGetName")
                model = as_text(name) if name is not None else "unknown"
                self._model_by_uuid[uuid] = model
            reading = GpuReading(
                node=self.node,
                uuid=uuid,
                model=model,
                source=self.source,
                idle_watts=profile_idle_watts(model),
            )
            reading.power_watts = _scaled(ask("nvmlDeviceGetPowerUsage"), 1e-3)
            reading.energy_counter_joules = _scaled(
                ask("nvmlDeviceGetTotalEnergyConsumption"), 1e-3
            )
            reading.power_limit_watts = _scaled(ask("nvmlDeviceGetPowerManagementLimit"), 1e-3)
            constraints = ask("nvmlDeviceGetPowerManagementLimitConstraints")
            if constraints is not None:
                reading.power_limit_min_watts = float(constraints[0]) / 1000.0
                reading.power_limit_max_watts = float(constraints[1]) / 1000.0
            reading.power_limit_default_watts = _scaled(
                ask("nvmlDeviceGetPowerManagementDefaultLimit"), 1e-3
            )
            utilization = ask("nvmlDeviceGetUtilizationRates")
            if utilization is not None:
                reading.utilization_ratio = float(utilization.gpu) / 100.0
            reading.temperature_celsius = _scaled(
                ask("nvmlDeviceGetTemperature", self.nvml.NVML_TEMPERATURE_GPU), 1.0
            )
            reading.sm_clock_hertz = _scaled(
                ask("nvmlDeviceGetClockInfo", self.nvml.NVML_CLOCK_SM), 1e6
            )
            last_seen = self._last_process_timestamp.get(uuid, 0)
            processes = ask("nvmlDeviceGetProcessUtilization", last_seen)
            if processes:
                shares: dict[int, float] = {}
                for process in processes:
                    pid = int(process.pid)
                    shares[pid] = shares.get(pid, 0.0) + float(process.smUtil) / 100.0
                    last_seen = max(last_seen, int(process.timeStamp))
                self._last_process_timestamp[uuid] = last_seen
                reading.process_sm_shares = shares
            mig_mode = ask("nvmlDeviceGetMigMode")
            if mig_mode is not None and int(mig_mode[0]) == self.nvml.NVML_DEVICE_MIG_ENABLE:
                total = ask("nvmlDeviceGetMaxMigDeviceCount")
                reading.mig_total_slices = int(total) if total else DEFAULT_MIG_SLICES
                reading.mig_slices = self._read_mig(handle, uuid, reading.mig_total_slices, fail)
            else:
                running = ask("nvmlDeviceGetComputeRunningProcesses")
                if running:
                    reading.process_memory_bytes = _memory_by_pid(running)
        except _DeviceLostError:
            sample.down_devices.append((self.node, uuid))
            return None
        return reading

    def _read_mig(
        self, handle: Any, parent: str, count: int, fail: Callable[[str, BaseException], None]
    ) -> tuple[MigSlice, ...]:
        """The MIG devices of a GPU in MIG mode, with the processes running on each.

        A MIG slot with no instance raises NotFound (skipped); the static facts
        of an instance (UUID, size, profile) are cached by parent and slot.
        """
        slices: list[MigSlice] = []
        for slot in range(count):
            try:
                mig = self.nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except self.nvml.NVMLError as error:
                if error_code(error) != self.nvml.NVML_ERROR_NOT_FOUND:
                    fail("nvmlDeviceGetMigDeviceHandleByIndex", error)
                self._mig_by_slot.pop((parent, slot), None)
                continue
            try:
                mig_uuid = as_text(self.nvml.nvmlDeviceGetUUID(mig))
                known = self._mig_by_slot.get((parent, slot))
                if known is None or known.uuid != mig_uuid:
                    instance = int(self.nvml.nvmlDeviceGetGpuInstanceId(mig))
                    size = int(self.nvml.nvmlDeviceGetAttributes(mig).gpuInstanceSliceCount)
                    match = _MIG_PROFILE.search(as_text(self.nvml.nvmlDeviceGetName(mig)))
                    profile = match.group(1) if match else f"{size}g"
                    known = MigSlice(mig_uuid, instance, size, profile)
                    self._mig_by_slot[(parent, slot)] = known
                running = self.nvml.nvmlDeviceGetComputeRunningProcesses(mig) or []
            except self.nvml.NVMLError as error:
                fail("mig", error)
                continue
            memory = _memory_by_pid(running)
            slices.append(
                MigSlice(
                    known.uuid,
                    known.gpu_instance_id,
                    known.slices,
                    known.profile,
                    tuple(sorted(memory)),
                    memory,
                )
            )
        return tuple(slices)


def _memory_by_pid(processes: Any) -> dict[int, float]:
    """pid -> GPU memory in bytes from nvmlDeviceGetComputeRunningProcesses (None: unknown, 0)."""
    memory: dict[int, float] = {}
    for process in processes:
        used = getattr(process, "usedGpuMemory", None)
        pid = int(process.pid)
        memory[pid] = memory.get(pid, 0.0) + (float(used) if used is not None else 0.0)
    return memory


def _scaled(value: Any, factor: float) -> float | None:
    return None if value is None else float(value) * factor
