"""A service's demand from its workload's measured utilisation, for the Lepton scheduler's hints.

A service pod declares (or not) how busy it keeps a reference GPU; once it or
the other pods of its workload have run, Prometheus knows better. This module
fetches that history (``PrometheusHistory.pod_utilization``) for the pods that
share the pod's owner, forecasts each of them, and keeps the forecasts per
(namespace, owner); :func:`lepton.core.predictor.demand_from_forecasts` decides.

No filter or prioritize call waits on Prometheus or on a model (kube-scheduler
calls the Lepton scheduler serially): :meth:`ServiceDemands.hints` only reads what is
kept. A workload not kept yet (or kept longer than ``ttl_seconds``) is asked
for (:meth:`ServiceDemands.want`, also called when the watch sees a service pod
pending) and fetched by a background thread (:meth:`ServiceDemands.loop`);
until then, and whenever Prometheus cannot answer, the hints go on as the pod
declared them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lepton.core.hints import JobHints
from lepton.core.predictor import (
    Forecast,
    LoadPredictor,
    ServiceDemand,
    demand_from_forecasts,
    own_samples_needed,
    with_demand,
)

from .history import HistoryError, PrometheusHistory

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, owner)


def sibling_pattern(owner: str) -> str:
    """The regex of the pods a ReplicaSet, StatefulSet or Job names after itself."""
    return re.escape(owner) + "-[a-z0-9]+"


@dataclass(frozen=True)
class PodForecast:
    """One pod's forecast from its own history, and how many samples it had."""

    forecast: Forecast
    samples: int


@dataclass
class ServiceDemands:
    """Workload forecasts from Prometheus, kept per (namespace, owner), made into hints."""

    history: PrometheusHistory
    predictor: LoadPredictor
    history_seconds: float = 86_400.0
    ttl_seconds: float = 60.0
    # A workload nobody asked about for this long is no longer refreshed (and forgotten).
    keep_seconds: float = 3_600.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        # (namespace, owner) -> (when fetched, each pod's forecast by pod name)
        self._kept: dict[Key, tuple[float, dict[str, PodForecast]]] = {}
        self._asked: dict[Key, float] = {}  # when each workload was last asked about
        self._tried: dict[Key, float] = {}  # when it was last fetched, or tried to be
        self._lock = threading.Lock()
        self.wake = threading.Event()

    # -------------------------------------------------------------- request path

    def want(self, namespace: str, owner: str) -> None:
        """Ask for the workload's forecasts (the background thread fetches them)."""
        key = (namespace, owner)
        now = self.monotonic()
        with self._lock:
            self._asked[key] = now
            tried = self._tried.get(key)
        if tried is None or now - tried >= self.ttl_seconds:
            self.wake.set()

    def kept(self, namespace: str, owner: str) -> dict[str, PodForecast] | None:
        """The workload's pod forecasts as last fetched (None: never); asks for a refresh."""
        self.want(namespace, owner)
        with self._lock:
            kept = self._kept.get((namespace, owner))
        return kept[1] if kept is not None else None

    def hints(
        self,
        namespace: str,
        pod: str,
        owner: str | None,
        hints: JobHints,
        *,
        declared: bool,
    ) -> tuple[JobHints, ServiceDemand | None]:
        """``hints`` with the service's demand from its own or its siblings' forecasts.

        Reads only what is kept: a workload not fetched yet keeps its declared hints.
        """
        if not hints.is_service or not owner:
            return hints, None
        pods = self.kept(namespace, owner)
        if pods is None:
            return hints, None
        mine = pods.get(pod)
        siblings = [f.forecast for name, f in pods.items() if name != pod]
        demand = demand_from_forecasts(
            mine.forecast if mine else None,
            siblings,
            own_trusted=mine is not None and mine.samples >= own_samples_needed(self.predictor),
            declared_percent=hints.reference_utilization_percent if declared else None,
        )
        return with_demand(hints, demand), demand

    # -------------------------------------------------------------- background

    def fetch(self, namespace: str, owner: str) -> dict[str, PodForecast]:
        """Query Prometheus for the workload's pods and forecast each (blocking)."""
        end = self.clock()
        start = end - timedelta(seconds=self.history_seconds)
        series = self.history.pod_utilization(
            namespace, sibling_pattern(owner), start, end, self.predictor.config.step_seconds
        )
        names = [n for n, s in series.items() if len(s)]
        forecasts = self.predictor.forecast_many([series[n] for n in names])
        out = {
            name: PodForecast(f, len(series[name]))
            for name, f in zip(names, forecasts, strict=True)
            if f is not None
        }
        with self._lock:
            self._kept[(namespace, owner)] = (self.monotonic(), out)
        return out

    def refresh(self) -> int:
        """Fetch every workload asked about recently whose forecasts are missing or stale."""
        now = self.monotonic()
        with self._lock:
            for key in [k for k, t in self._asked.items() if now - t > self.keep_seconds]:
                del self._asked[key]
                self._kept.pop(key, None)
                self._tried.pop(key, None)
            due = [
                k
                for k in self._asked
                if k not in self._tried or now - self._tried[k] >= self.ttl_seconds
            ]
            for key in due:  # a failed fetch is retried after ttl_seconds, not at once
                self._tried[key] = now
        fetched = 0
        for namespace, owner in due:
            try:
                self.fetch(namespace, owner)
                fetched += 1
            except HistoryError as error:
                log.warning("no workload history for %s/%s: %s", namespace, owner, error)
            except Exception:  # one workload's failure must not starve the others
                log.exception("forecasting workload %s/%s failed", namespace, owner)
        return fetched

    def loop(self, stop: threading.Event) -> None:
        """Refresh when asked, and every ``ttl_seconds``, until ``stop`` is set."""
        while not stop.is_set():
            self.wake.clear()
            try:
                self.refresh()
            except Exception:
                log.exception("workload demand refresh failed")
            self.wake.wait(self.ttl_seconds)
