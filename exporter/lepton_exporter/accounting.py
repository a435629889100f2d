"""Turns successive samples into the exporter's counters: device, idle, per-pod and CPU joules.

Prometheus counters must only go up, yet the meters under them wrap, reset
and vanish. This module keeps the exporter's own monotonic totals, fed by the
pure rules of ``lepton.core.metering``, and holds the invariant users bill on:
for every GPU, the pods' active joules plus the idle joules plus the
unattributed joules equal the device's joules.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lepton.core.metering import (
    integrate_power_joules,
    resetting_counter_delta,
    split_by_share,
    split_idle_and_active,
    wrapping_counter_delta,
)
from lepton_exporter.procs import (
    REASON_MIG_SLICE_WITHOUT_POD,
    REASON_NO_POD_HOLDS_GPU,
    REASON_POD_WITHOUT_ALLOCATION,
    REASON_UNRESOLVED_PID,
)
from lepton_exporter.readings import CpuZoneReading, DeviceError, GpuReading, PodRef, Sample

# A pod's counters outlive the pod by this long, so that Prometheus scrapes
# their final value (at least a few scrape intervals of 15-60 s) before the
# series disappear and cardinality stays bounded.
POD_RETENTION_SECONDS = 600.0


@dataclass
class GpuAccount:
    """The exporter's running totals for one GPU."""

    node: str
    uuid: str
    model: str
    source: str
    energy_joules_total: float = 0.0
    idle_joules_total: float = 0.0
    # reason -> active joules no pod could be charged for.
    unattributed_joules_total: dict[str, float] = field(default_factory=dict)
    # (pod, attribution method) -> active joules.
    pod_active_joules_total: dict[tuple[PodRef, str], float] = field(default_factory=dict)
    # pod -> its share of the idle joules, by allocation.
    pod_idle_joules_total: dict[PodRef, float] = field(default_factory=dict)
    # Idle joules of capacity no pod held (no holder, MIG slices free or unpartitioned).
    unallocated_idle_joules_total: float = 0.0
    # MIG UUID -> (profile, joules the MIG model gives the slice).
    mig_joules_total: dict[str, tuple[str, float]] = field(default_factory=dict)
    pod_last_seen: dict[PodRef, float] = field(default_factory=dict)
    reading: GpuReading | None = None
    up: bool = True
    last_counter_joules: float | None = None
    last_power_watts: float | None = None
    last_time: float | None = None


@dataclass
class CpuAccount:
    """The exporter's running total for one RAPL zone."""

    node: str
    zone: str
    energy_joules_total: float = 0.0
    last_microjoules: float | None = None


@dataclass
class Snapshot:
    """A consistent copy of the accounts, for one scrape."""

    gpus: list[GpuAccount]
    cpus: list[CpuAccount]
    errors: dict[DeviceError, int]
    up: dict[tuple[str, str], bool]
    power_caps: dict[tuple[str, str], float]


class Accountant:
    """Keeps every total; thread-safe (the sampler writes, scrapes read)."""

    def __init__(self, pod_retention_seconds: float = POD_RETENTION_SECONDS) -> None:
        self._lock = threading.Lock()
        self._gpus: dict[tuple[str, str], GpuAccount] = {}
        self._cpus: dict[tuple[str, str], CpuAccount] = {}
        self._errors: dict[DeviceError, int] = {}
        self._up: dict[tuple[str, str], bool] = {}
        # (node, gpu uuid) -> the limit Lepton set, in watts.
        self._power_caps: dict[tuple[str, str], float] = {}
        self.pod_retention_seconds = pod_retention_seconds

    def record(
        self,
        sample: Sample,
        now: float,
        node: str,
        holders: Mapping[str, Sequence[PodRef]] | None = None,
        resolve_pid: PidResolver | None = None,
    ) -> None:
        """Fold one sample in; ``holders`` maps GPU UUIDs to the pods holding them.

        Every process the sample names is resolved here, once, outside the lock (the
        resolver reads /proc) and while it runs: one that exits before the next sample is
        still charged for the utilisation samples it left behind.
        """
        if resolve_pid is not None:
            resolved = {pid: resolve_pid(pid) for pid in _sample_pids(sample)}
            resolve_pid = resolved.get
        with self._lock:
            self._up[(node, sample.source)] = sample.up
            for error in sample.errors:
                self._errors[error] = self._errors.get(error, 0) + 1
            for down_node, device in sample.down_devices:
                account = self._gpus.get((down_node, device))
                if account is not None:
                    account.up = False
                    account.reading = None
            for reading in sample.gpus:
                gpu_holders = tuple(reading.holders) or tuple((holders or {}).get(reading.uuid, ()))
                self._record_gpu(reading, now, gpu_holders, resolve_pid, holders or {})
            for zone in sample.cpu_zones:
                self._record_cpu(zone)

    def _record_gpu(
        self,
        reading: GpuReading,
        now: float,
        holders: tuple[PodRef, ...],
        resolve_pid: PidResolver | None,
        holders_by_device: Mapping[str, Sequence[PodRef]],
    ) -> None:
        key = (reading.node, reading.uuid)
        account = self._gpus.get(key)
        if account is None:
            account = GpuAccount(reading.node, reading.uuid, reading.model, reading.source)
            self._gpus[key] = account
        account.up = True
        account.reading = reading
        account.model = reading.model
        joules = 0.0
        seconds = 0.0 if account.last_time is None else max(now - account.last_time, 0.0)
        if account.last_time is not None:
            counter = reading.energy_counter_joules
            if counter is not None and account.last_counter_joules is not None:
                joules = resetting_counter_delta(account.last_counter_joules, counter)
            elif reading.power_watts is not None:
                previous = account.last_power_watts
                joules = integrate_power_joules(
                    reading.power_watts if previous is None else previous,
                    reading.power_watts,
                    seconds,
                )
        account.last_counter_joules = reading.energy_counter_joules
        account.last_power_watts = reading.power_watts
        account.last_time = now
        slice_holders = mig_holders(reading, holders_by_device) if reading.mig_slices else {}
        for held in slice_holders.values():
            holders = (*holders, *held)
        for pod in holders:
            account.pod_last_seen[pod] = now
        if joules > 0:
            account.energy_joules_total += joules
            idle, active = split_idle_and_active(joules, reading.idle_watts, seconds)
            account.idle_joules_total += idle
            split = attribute_gpu_joules(idle, active, holders, reading, resolve_pid, slice_holders)
            for pod_method, share in split.pod_active.items():
                totals = account.pod_active_joules_total
                totals[pod_method] = totals.get(pod_method, 0.0) + share
                account.pod_last_seen.setdefault(pod_method[0], now)
            for pod, share in split.pod_idle.items():
                account.pod_idle_joules_total[pod] = (
                    account.pod_idle_joules_total.get(pod, 0.0) + share
                )
            for reason, share in split.unattributed.items():
                account.unattributed_joules_total[reason] = (
                    account.unattributed_joules_total.get(reason, 0.0) + share
                )
            account.unallocated_idle_joules_total += split.unallocated_idle
            for mig_uuid, (profile, share) in split.mig.items():
                _, before = account.mig_joules_total.get(mig_uuid, (profile, 0.0))
                account.mig_joules_total[mig_uuid] = (profile, before + share)
        for pod in holders:
            account.pod_idle_joules_total.setdefault(pod, 0.0)
        for pod, seen in list(account.pod_last_seen.items()):
            if now - seen > self.pod_retention_seconds:
                del account.pod_last_seen[pod]
                account.pod_idle_joules_total.pop(pod, None)
                for pod_method in [k for k in account.pod_active_joules_total if k[0] == pod]:
                    del account.pod_active_joules_total[pod_method]

    def _record_cpu(self, zone: CpuZoneReading) -> None:
        key = (zone.node, zone.zone)
        account = self._cpus.get(key)
        if account is None:
            account = CpuAccount(zone.node, zone.zone)
            self._cpus[key] = account
        if account.last_microjoules is not None:
            delta = wrapping_counter_delta(
                account.last_microjoules,
                zone.energy_microjoules,
                zone.max_energy_range_microjoules,
            )
            account.energy_joules_total += delta / 1e6
        account.last_microjoules = zone.energy_microjoules

    def set_power_cap(self, node: str, uuid: str, watts: float | None) -> None:
        with self._lock:
            if watts is None:
                self._power_caps.pop((node, uuid), None)
            else:
                self._power_caps[(node, uuid)] = watts

    def count_error(self, error: DeviceError) -> None:
        with self._lock:
            self._errors[error] = self._errors.get(error, 0) + 1

    def snapshot(self) -> Snapshot:
        """Copies of the accounts (cheap: the exporter holds tens of GPUs, hundreds of pods)."""
        with self._lock:
            gpus = [
                GpuAccount(
                    a.node,
                    a.uuid,
                    a.model,
                    a.source,
                    a.energy_joules_total,
                    a.idle_joules_total,
                    dict(a.unattributed_joules_total),
                    dict(a.pod_active_joules_total),
                    dict(a.pod_idle_joules_total),
                    a.unallocated_idle_joules_total,
                    dict(a.mig_joules_total),
                    {},
                    a.reading,
                    a.up,
                )
                for a in self._gpus.values()
            ]
            cpus = [CpuAccount(a.node, a.zone, a.energy_joules_total) for a in self._cpus.values()]
            return Snapshot(gpus, cpus, dict(self._errors), dict(self._up), dict(self._power_caps))


def _sample_pids(sample: Sample) -> set[int]:
    pids: set[int] = set()
    for reading in sample.gpus:
        pids.update(reading.process_memory_bytes, reading.process_sm_shares)
        for mig in reading.mig_slices:
            pids.update(mig.pids)
    return pids


# How a pod's active share was reckoned (the ``attribution`` label).
METHOD_EXCLUSIVE = "exclusive"  # one pod holds the whole GPU
METHOD_SM = "sm_utilization"  # per-process SM utilisation over the interval
METHOD_MEMORY = "process_memory"  # no utilisation samples: running processes' memory
METHOD_EQUAL = "equal"  # no process data at all: an equal split among the holders
METHOD_MODEL = "model"  # the model backend's own shares
METHOD_MIG = "mig_slice_size"  # MIG: the board split by slice size (a model)
SOURCE_MIG_MODEL = "mig_model"  # the source label of what a MIG split attributes

PidResult = PodRef | str | None
PidResolver = Callable[[int], PidResult]


@dataclass
class Attribution:
    """Where one interval's joules of one GPU went; the parts sum to the device's joules."""

    pod_active: dict[tuple[PodRef, str], float] = field(default_factory=dict)
    pod_idle: dict[PodRef, float] = field(default_factory=dict)
    unattributed: dict[str, float] = field(default_factory=dict)  # reason -> active joules
    unallocated_idle: float = 0.0
    # MIG UUID -> (profile, joules) for a MIG board.
    mig: dict[str, tuple[str, float]] = field(default_factory=dict)

    def add_active(self, pod: PodRef, method: str, joules: float) -> None:
        self.pod_active[(pod, method)] = self.pod_active.get((pod, method), 0.0) + joules

    def add_idle(self, pod: PodRef, joules: float) -> None:
        self.pod_idle[pod] = self.pod_idle.get(pod, 0.0) + joules

    def add_unattributed(self, reason: str, joules: float) -> None:
        self.unattributed[reason] = self.unattributed.get(reason, 0.0) + joules


def _match_holder(result: PidResult, holders: Sequence[PodRef]) -> PodRef | str:
    """The holder a resolved process belongs to, or the reason it belongs to none.

    A process may resolve to a container the pod-resources API did not list for this
    GPU (another container of the same pod, or one whose id the API has not named yet):
    it is charged to that pod's holding container.
    """
    if result is None:
        return REASON_UNRESOLVED_PID
    if isinstance(result, str):
        return result
    if result in holders:
        return result
    for holder in holders:
        if (holder.namespace, holder.pod) == (result.namespace, result.pod):
            return holder
    return REASON_POD_WITHOUT_ALLOCATION


def _split_idle_by_allocation(
    out: Attribution, idle_joules: float, holders: Sequence[PodRef]
) -> None:
    """Idle energy by allocation: each holder's replicas (its repeats in ``holders``)."""
    if idle_joules <= 0:
        return
    if not holders:
        out.unallocated_idle += idle_joules
        return
    counts = Counter(holders)
    for pod, joules in split_by_share(idle_joules, dict(counts)).items():
        out.add_idle(pod, joules)


def _split_active_by_processes(
    out: Attribution,
    active_joules: float,
    holders: Sequence[PodRef],
    reading: GpuReading,
    resolve_pid: PidResolver | None,
    weights_by_pid: Sequence[tuple[str, Mapping[int, float]]],
) -> None:
    """Active energy by process weights: the first usable kind of ``weights_by_pid``, else equal."""
    distinct = list(dict.fromkeys(holders))
    if resolve_pid is not None:
        for method, weights in weights_by_pid:
            if sum(max(w, 0.0) for w in weights.values()) <= 0:
                continue
            shares: dict[PodRef | str, float] = {}
            for pid, weight in weights.items():
                key = _match_holder(resolve_pid(pid), distinct)
                shares[key] = shares.get(key, 0.0) + weight
            for key, joules in split_by_share(active_joules, shares).items():
                if isinstance(key, PodRef):
                    out.add_active(key, method, joules)
                else:
                    out.add_unattributed(key, joules)
            return
    if not distinct:
        out.add_unattributed(REASON_NO_POD_HOLDS_GPU, active_joules)
        return
    for pod, joules in split_by_share(active_joules, dict.fromkeys(distinct, 0.0)).items():
        out.add_active(pod, METHOD_EQUAL, joules)


def attribute_gpu_joules(
    idle_joules: float,
    active_joules: float,
    holders: Sequence[PodRef],
    reading: GpuReading,
    resolve_pid: PidResolver | None,
    holders_by_device: Mapping[str, Sequence[PodRef]] | None = None,
) -> Attribution:
    """Split one interval's idle and active joules of a GPU among the pods holding it.

    ``holders`` lists each container once per replica it holds (a time-sliced GPU's
    ``<uuid>::<n>`` ids); for a MIG board ``holders_by_device`` names each MIG device's.

    - idle energy goes by allocation: replicas held, or MIG slice size; never by activity;
    - a GPU one pod holds: all its active energy is that pod's (``exclusive``);
    - a shared GPU (time-slicing, MPS): by each process's SM utilisation, else by its
      memory, else equally (the ``attribution`` label says which);
    - MIG: active energy by the slices that run processes, weighted by slice size;
    - a joule no pod can be charged for is unattributed, with its reason.
    """
    out = Attribution()
    if reading.mig_slices:
        _attribute_mig(out, idle_joules, active_joules, reading, resolve_pid, holders_by_device)
        return out
    _split_idle_by_allocation(out, idle_joules, holders)
    if active_joules <= 0:
        return out
    distinct = list(dict.fromkeys(holders))
    if reading.holder_shares:
        shares = {pod: reading.holder_shares.get(pod, 0.0) for pod in distinct}
        for pod, joules in split_by_share(active_joules, shares).items():
            out.add_active(pod, METHOD_MODEL, joules)
        if not distinct:
            out.add_unattributed(REASON_NO_POD_HOLDS_GPU, active_joules)
        return out
    if len(distinct) == 1:
        out.add_active(distinct[0], METHOD_EXCLUSIVE, active_joules)
        return out
    _split_active_by_processes(
        out,
        active_joules,
        distinct,
        reading,
        resolve_pid,
        ((METHOD_SM, reading.process_sm_shares), (METHOD_MEMORY, reading.process_memory_bytes)),
    )
    return out


def mig_holders(
    reading: GpuReading, holders_by_device: Mapping[str, Sequence[PodRef]]
) -> dict[str, tuple[PodRef, ...]]:
    """Each MIG device's holders, by its UUID (``MIG-<uuid>``, drivers R470 and later) or by
    the older id the device plugin used, ``MIG-<parent GPU UUID>/<GPU instance>/<CI>``."""
    legacy: dict[int, list[PodRef]] = {}
    prefix = f"MIG-{reading.uuid}/"
    for device_id, pods in holders_by_device.items():
        if device_id.startswith(prefix):
            instance = device_id[len(prefix) :].split("/", 1)[0]
            if instance.isdigit():
                legacy.setdefault(int(instance), []).extend(pods)
    return {
        mig.uuid: (*holders_by_device.get(mig.uuid, ()), *legacy.get(mig.gpu_instance_id, ()))
        for mig in reading.mig_slices
    }


def _attribute_mig(
    out: Attribution,
    idle_joules: float,
    active_joules: float,
    reading: GpuReading,
    resolve_pid: PidResolver | None,
    holders_by_device: Mapping[str, Sequence[PodRef]] | None,
) -> None:
    """The MIG model: NVML meters only the board, so the board is split by slice size.

    Idle: each MIG device gets ``slices / total`` of it (unpartitioned slices are
    unallocated); active: the devices with running processes share it by size. Within
    a device shared by several pods, the same rules as a time-sliced GPU apply.
    """
    total = max(reading.mig_total_slices, sum(s.slices for s in reading.mig_slices), 1)
    by_device = holders_by_device or {}
    mig_joules: dict[str, float] = {}
    used = 0
    for mig in reading.mig_slices:
        used += mig.slices
        share = idle_joules * mig.slices / total
        mig_joules[mig.uuid] = share
        _split_idle_by_allocation(out, share, tuple(by_device.get(mig.uuid, ())))
    out.unallocated_idle += idle_joules * max(total - used, 0) / total
    if active_joules > 0:
        busy = {m.uuid: float(m.slices) for m in reading.mig_slices if m.pids}
        if not busy:
            # Active draw with no process on any slice: by size among the held slices.
            busy = {m.uuid: float(m.slices) for m in reading.mig_slices if by_device.get(m.uuid)}
        if not busy:
            out.add_unattributed(REASON_MIG_SLICE_WITHOUT_POD, active_joules)
        for mig in reading.mig_slices:
            if mig.uuid not in busy:
                continue
            share = active_joules * busy[mig.uuid] / sum(busy.values())
            mig_joules[mig.uuid] += share
            slice_holders = list(dict.fromkeys(by_device.get(mig.uuid, ())))
            if not slice_holders:
                out.add_unattributed(REASON_MIG_SLICE_WITHOUT_POD, share)
            elif len(slice_holders) == 1:
                out.add_active(slice_holders[0], METHOD_MIG, share)
            else:
                _split_active_by_processes(
                    out,
                    share,
                    slice_holders,
                    reading,
                    resolve_pid,
                    ((METHOD_MIG, mig.process_memory_bytes),),
                )
    out.mig = {m.uuid: (m.profile, mig_joules.get(m.uuid, 0.0)) for m in reading.mig_slices}
