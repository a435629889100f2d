"""Recording why a pod was placed, as a Kubernetes Event on the pod.

Writing an Event costs an API round trip and its message costs a ranking of the
candidates; the Lepton scheduler must answer within a millisecond or two, so neither
happens on the request path. A request hands over a callable that builds the
body; one background thread takes what is queued in batches, keeps only the
latest decision per pod of each batch (kube-scheduler retries a pod), and
posts at most ``rate`` events per second (a token bucket of ``burst``).
Past the queue's size or the rate, events are dropped and counted (the
decision itself is not).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lepton.core.names import EVENT_REASON_SCORED, SCHEDULER_NAME

log = logging.getLogger(__name__)


def event_body(
    namespace: str, pod_name: str, pod_uid: str, message: str, now: datetime | None = None
) -> dict[str, Any]:
    """A core/v1 Event about the pod (reason LeptonScored)."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{pod_name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod_name,
            "namespace": namespace,
            "uid": pod_uid,
        },
        "reason": EVENT_REASON_SCORED,
        # The API caps an Event message at 1 KiB.
        "message": message[:1000],
        "type": "Normal",
        "source": {"component": SCHEDULER_NAME},
        "reportingComponent": SCHEDULER_NAME,
        "reportingInstance": SCHEDULER_NAME,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    """Posts events from a background thread; ``post`` is the API call (namespace, body)."""

    def __init__(
        self,
        post: Callable[[str, dict[str, Any]], object],
        size: int = 1000,
        *,
        rate: float = 50.0,
        burst: int = 100,
        batch: int = 100,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self._post = post
        self._queue: queue.Queue[tuple[str, Callable[[], dict[str, Any]]] | None] = queue.Queue(
            maxsize=size
        )
        self._rate, self._burst, self._batch = rate, float(burst), batch
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self.on_drop = on_drop
        self.dropped = 0
        self.posted = 0
        self._thread = threading.Thread(target=self._run, name="lepton-events", daemon=True)
        self._thread.start()

    def record(self, key: str, build: Callable[[], dict[str, Any]]) -> None:
        """Queue the event ``build()`` makes, for the object ``key`` (one per key per batch)."""
        try:
            self._queue.put_nowait((key, build))
        except queue.Full:
            self._drop(1)

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self.on_drop is not None:
            self.on_drop(count)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending = {first[0]: first[1]}
            stop = False
            while len(pending) < self._batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if item[0] in pending:
                    self._drop(1)  # superseded by the same pod's later decision
                pending[item[0]] = item[1]
            for key, build in pending.items():
                if not self._take_token():
                    self._drop(1)
                    continue
                try:
                    body = build()
                    self._post(body["metadata"]["namespace"], body)
                    self.posted += 1
                except Exception as error:  # an event is best effort
                    log.info("could not record event on %s: %s", key, error)
            if stop:
                return

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
