"""Recording why a pod was placed, as a Kubernetes Event on the pod.

Writing an Event costs an API round trip; the extender must answer within
milliseconds, so events go through a bounded queue to one background thread.
When the queue is full, events are dropped (the decision itself is not).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
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

    def __init__(self, post: Callable[[str, dict[str, Any]], object], size: int = 1000) -> None:
        self._post = post
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=size)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="lepton-events", daemon=True)
        self._thread.start()

    def record(self, body: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while (body := self._queue.get()) is not None:
            try:
                self._post(body["metadata"]["namespace"], body)
            except Exception as error:  # an event is best effort
                log.info("could not record event on %s: %s", body["involvedObject"]["name"], error)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
