"""Leader election on a coordination.k8s.io/v1 Lease, so that only one replica admits.

client-go's algorithm, small: a replica holds the Lease while it renews it within
``leaseDurationSeconds``; another takes it over only once the record has not changed for a
whole lease duration *by its own clock* (no trust in the holder's clock). Every write carries
the Lease's resourceVersion, so two replicas racing for an expired Lease cannot both win.
A leader that cannot renew in time stops at once (the process exits and is restarted as a
follower); the budget's conditional writes keep the books right even across that instant.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("lepton.operator")

DEFAULT_LEASE_NAME = "lepton-operator"
DEFAULT_LEASE_SECONDS = 15


def default_identity() -> str:
    """This replica's name: the pod's hostname, and the process id for two on one host."""
    import os

    return f"{socket.gethostname()}-{os.getpid()}"


def _micro_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Observed:
    record: tuple[Any, ...]
    since: float  # monotonic time when this record was first seen


class LeaseElector:
    """Acquire and renew one Lease; ``is_leader`` says whether this replica holds it."""

    def __init__(
        self,
        coordination: client.CoordinationV1Api,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        identity: str | None = None,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = coordination
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._observed: _Observed | None = None
        self.renewed_at: float | None = None  # monotonic time of our last successful write

    @property
    def renew_deadline_seconds(self) -> float:
        """How long after its last renewal a leader still acts: two thirds of the lease (as
        client-go's defaults, 10 of 15 s), so it has stopped before anyone may take over."""
        return self.lease_seconds * 2.0 / 3.0

    @property
    def is_leader(self) -> bool:
        """Whether this replica renewed the Lease within its renew deadline."""
        return (
            self.renewed_at is not None
            and self.clock() - self.renewed_at < self.renew_deadline_seconds
        )

    def _body(self, lease: Any | None, transitions: int, acquired: str | None) -> Any:
        now = _micro_time(datetime.now(UTC))
        spec = client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.lease_seconds,
            acquire_time=acquired or now,
            renew_time=now,
            lease_transitions=transitions,
        )
        meta = client.V1ObjectMeta(name=self.name, namespace=self.namespace)
        if lease is not None:
            meta.resource_version = lease.metadata.resource_version
        return client.V1Lease(metadata=meta, spec=spec)

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        started = self.clock()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            try:
                self.api.create_namespaced_lease(self.namespace, self._body(None, 0, None))
            except ApiException as create_error:
                if create_error.status == 409:
                    return False  # another replica created it first
                raise
            self.renewed_at = started
            return True
        spec = lease.spec
        holder = spec.holder_identity or ""
        record = (holder, str(spec.renew_time), spec.lease_duration_seconds)
        if self._observed is None or self._observed.record != record:
            self._observed = _Observed(record, started)
        duration = spec.lease_duration_seconds or self.lease_seconds
        expired = started - self._observed.since >= duration
        if holder and holder != self.identity and not expired:
            self.renewed_at = None
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        acquired = (
            _micro_time(spec.acquire_time)
            if holder == self.identity and spec.acquire_time
            else None
        )
        try:
            self.api.replace_namespaced_lease(
                self.name, self.namespace, self._body(lease, transitions, acquired)
            )
        except ApiException as error:
            if error.status == 409:
                self.renewed_at = None
                return False  # someone else wrote it meanwhile
            raise
        self.renewed_at = started
        return True

    def wait_until_leader(self, stop: threading.Event, retry_seconds: float = 1.0) -> bool:
        """Block until this replica holds the Lease (True) or ``stop`` is set (False)."""
        announced = False
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    log.warning("leader election: %s holds Lease %s", self.identity, self.name)
                    return True
            except ApiException as error:
                log.warning("leader election: %s", error.reason)
            if not announced:
                log.warning("leader election: waiting for Lease %s", self.name)
                announced = True
            stop.wait(retry_seconds)
        return False

    def keep_renewing(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew every fifth of the lease until ``stop``; call ``on_lost`` once renewal has
        failed past the renew deadline (before another replica may take over). A watchdog
        thread checks the deadline, so that a renewal hanging on a slow apiserver cannot keep
        this replica acting as leader after the others may have taken over."""
        interval = max(0.25, self.lease_seconds / 5.0)
        lost = threading.Event()
        guard = threading.Lock()

        def lose() -> None:
            with guard:
                if lost.is_set():
                    return
                lost.set()
            log.error("leader election: lost Lease %s; stopping", self.name)
            on_lost()

        def watchdog() -> None:
            while not stop.wait(min(0.1, interval)) and not lost.is_set():
                if not self.is_leader:
                    lose()

        threading.Thread(target=watchdog, daemon=True, name="lease-watchdog").start()
        while not stop.wait(interval) and not lost.is_set():
            try:
                self.try_acquire_or_renew()
            except Exception as error:  # the apiserver is unreachable: keep trying until late
                log.warning("leader election: renewal failed: %s", error)
            if not self.is_leader:
                lose()
                return
