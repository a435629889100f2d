"""Turns successive samples into the exporter's counters: device, idle, per-pod and CPU joules.

Prometheus counters must only go up, yet the meters under them wrap, reset
and vanish. This module keeps the exporter's own monotonic totals, fed by the
pure rules of ``lepton.core.metering``, and holds the invariant users bill on:
for every GPU, the pods' active joules plus the idle joules plus the
unattributed joules equal the device's joules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lepton.core.metering import (
    integrate_power_joules,
    resetting_counter_delta,
    split_by_share,
    split_idle_and_active,
    wrapping_counter_delta,
)
from lepton_exporter.readings import CpuZoneReading, DeviceError, GpuReading, PodRef, Sample

# A pod's counters outlive the pod by this long, so that Prometheus scrapes
# their final value (at least a few scrape intervals of 15-60 s) before the
# series disappear and cardinality stays bounded.
POD_RETENTION_SECONDS = 600.0

PidResolver = Callable[[int], PodRef | None]


@dataclass
class GpuAccount:
    """The exporter's running totals for one GPU."""

    node: str
    uuid: str
    model: str
    source: str
    energy_joules_total: float = 0.0
    idle_joules_total: float = 0.0
    unattributed_joules_total: float = 0.0
    pod_active_joules_total: dict[PodRef, float] = field(default_factory=dict)
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
        """Fold one sample in; ``holders`` maps GPU UUIDs to the pods holding them."""
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
                self._record_gpu(reading, now, gpu_holders, resolve_pid)
            for zone in sample.cpu_zones:
                self._record_cpu(zone)

    def _record_gpu(
        self,
        reading: GpuReading,
        now: float,
        holders: tuple[PodRef, ...],
        resolve_pid: PidResolver | None,
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
        for pod in holders:
            account.pod_active_joules_total.setdefault(pod, 0.0)
            account.pod_last_seen[pod] = now
        if joules > 0:
            account.energy_joules_total += joules
            idle, active = split_idle_and_active(joules, reading.idle_watts, seconds)
            account.idle_joules_total += idle
            split = attribute_active_joules(active, holders, reading, resolve_pid)
            for holder, share_joules in split.items():
                if holder is None:
                    account.unattributed_joules_total += share_joules
                else:
                    account.pod_active_joules_total[holder] += share_joules
        for pod, seen in list(account.pod_last_seen.items()):
            if now - seen > self.pod_retention_seconds:
                del account.pod_last_seen[pod]
                del account.pod_active_joules_total[pod]

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
                    a.unattributed_joules_total,
                    dict(a.pod_active_joules_total),
                    {},
                    a.reading,
                    a.up,
                )
                for a in self._gpus.values()
            ]
            cpus = [CpuAccount(a.node, a.zone, a.energy_joules_total) for a in self._cpus.values()]
            return Snapshot(gpus, cpus, dict(self._errors), dict(self._up), dict(self._power_caps))


def attribute_active_joules(
    active_joules: float,
    holders: tuple[PodRef, ...],
    reading: GpuReading,
    resolve_pid: PidResolver | None,
) -> dict[PodRef | None, float]:
    """Split a GPU's active joules among the pods holding it; ``None`` is the unattributed rest.

    - the backend knows each holder's share (model backend): split by those;
    - one holder: a whole GPU given to one pod, so all of it is that pod's;
    - several holders (a time-sliced GPU): by each process's SM share, with
      processes mapped to pods by ``resolve_pid``; SM share of processes that
      belong to no holder stays unattributed; with no usable process data the
      holders share equally;
    - no holder: unattributed (a process outside Kubernetes, or no pod-resources API).
    """
    if active_joules <= 0:
        return {}
    if not holders:
        return {None: active_joules}
    shares: dict[PodRef | None, float]
    if reading.holder_shares:
        shares = {pod: reading.holder_shares.get(pod, 0.0) for pod in holders}
        return split_by_share(active_joules, shares)
    if len(holders) == 1:
        return {holders[0]: active_joules}
    shares = {pod: 0.0 for pod in holders}
    if resolve_pid is not None:
        for pid, share in reading.process_sm_shares.items():
            pod = resolve_pid(pid)
            key = pod if pod in shares else None
            shares[key] = shares.get(key, 0.0) + share
    if sum(shares.values()) <= 0:
        return split_by_share(active_joules, dict.fromkeys(holders, 0.0))
    return split_by_share(active_joules, shares)
