"""Where the Lepton scheduler expects the pods it let through to land, until the watch says.

kube-scheduler binds a pod asynchronously and asks about the job's next
replica at once, long before the watch shows the first one bound. Waiting for
the watch inside a call would stall all of kube-scheduler (the protocol is
serial), so the Lepton scheduler keeps its own record instead, much as kube-scheduler
"assumes" a pod onto its node before the binding is written: a pod counts on
the node it was ranked best on, for its siblings, from that moment. The pod
watch then drops the record, when it sees the pod bound (the cache then holds
where it really went), deleted, or when the record outlives its TTL (the pod
was never bound: kube-scheduler gave up on it, or will ask again, which
replaces the record).

Nothing here blocks: every method is a few dictionary operations under a lock
shared with the watch threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass


@dataclass(slots=True)
class _Assumption:
    namespace: str
    job_name: str
    node: str
    expires: float


class AssumedPlacements:
    """Pod UID -> the node it is assumed on, per job; expiring after ``ttl_seconds``."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._by_uid: dict[str, _Assumption] = {}
        self._by_job: dict[tuple[str, str], set[str]] = {}
        # Bumped on every change, so that a computation cached on the old record is not reused.
        self.version = 0

    def __len__(self) -> int:
        return len(self._by_uid)

    def assume(self, namespace: str, job_name: str, uid: str, node: str) -> None:
        """The pod ``uid`` of the job counts on ``node`` from now on (replacing any earlier)."""
        if not uid:
            return
        with self._lock:
            self._drop(uid)
            expires = self._clock() + self.ttl_seconds
            self._by_uid[uid] = _Assumption(namespace, job_name, node, expires)
            self._by_job.setdefault((namespace, job_name), set()).add(uid)
            self.version += 1

    def forget(self, uid: str) -> None:
        """The watch saw the pod bound or deleted: the cache knows better now."""
        if uid not in self._by_uid:  # the common case, without the lock
            return
        with self._lock:
            if self._drop(uid):
                self.version += 1

    def nodes(
        self, namespace: str, job_name: str, exclude_uid: str, known: Collection[str] = ()
    ) -> list[str]:
        """Nodes the job's other assumed pods count on; ``known`` (UIDs the cache has bound) are
        left out, and expired records are dropped."""
        if (namespace, job_name) not in self._by_job:  # the common case, without the lock
            return []
        now = self._clock()
        out: list[str] = []
        with self._lock:
            for uid in list(self._by_job.get((namespace, job_name), ())):
                record = self._by_uid[uid]
                if record.expires <= now:
                    self._drop(uid)
                    self.version += 1
                elif uid != exclude_uid and uid not in known:
                    out.append(record.node)
        return out

    def node_of(self, uid: str) -> str | None:
        record = self._by_uid.get(uid)
        return None if record is None else record.node

    def _drop(self, uid: str) -> bool:
        record = self._by_uid.pop(uid, None)
        if record is None:
            return False
        key = (record.namespace, record.job_name)
        members = self._by_job.get(key)
        if members is not None:
            members.discard(uid)
            if not members:
                del self._by_job[key]
        return True
