"""A service's demand from its workload's measured utilisation, for the extender's hints.

A service pod declares (or not) how busy it keeps a reference GPU; once it or
the other pods of its workload have run, Prometheus knows better. This module
fetches that history (``PrometheusHistory.pod_utilization``) for the pods that
share the pod's owner, caches it a while (scheduling decisions come in bursts,
and Prometheus is not queried on every one), and hands it to
:func:`lepton.core.predictor.hints_with_forecast`, which decides. When
Prometheus cannot answer, the hints go on as the pod declared them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lepton.core.hints import JobHints
from lepton.core.predictor import LoadPredictor, Series, ServiceDemand, hints_with_forecast

from .history import HistoryError, PrometheusHistory

log = logging.getLogger(__name__)


def sibling_pattern(owner: str) -> str:
    """The regex of the pods a ReplicaSet, StatefulSet or Job names after itself."""
    return re.escape(owner) + "-[a-z0-9]+"


@dataclass
class ServiceDemands:
    """Workload history from Prometheus, cached per (namespace, owner), made into hints."""

    history: PrometheusHistory
    predictor: LoadPredictor
    history_seconds: float = 86_400.0
    ttl_seconds: float = 60.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[float, Mapping[str, Series]]] = {}

    def workload(self, namespace: str, owner: str) -> Mapping[str, Series]:
        """Each pod of the owner's utilisation, by pod name (cached ``ttl_seconds``)."""
        key = (namespace, owner)
        cached = self._cache.get(key)
        if cached is not None and self.monotonic() - cached[0] < self.ttl_seconds:
            return cached[1]
        end = self.clock()
        start = end - timedelta(seconds=self.history_seconds)
        series = self.history.pod_utilization(
            namespace, sibling_pattern(owner), start, end, self.predictor.config.step_seconds
        )
        self._cache[key] = (self.monotonic(), series)
        return series

    def hints(
        self,
        namespace: str,
        pod: str,
        owner: str | None,
        hints: JobHints,
        *,
        declared: bool,
    ) -> tuple[JobHints, ServiceDemand | None]:
        """``hints`` with the service's demand from its own or its siblings' forecast."""
        if not hints.is_service or not owner:
            return hints, None
        try:
            pods = self.workload(namespace, owner)
        except HistoryError as error:
            log.warning("no workload history for %s/%s, using its hints: %s", namespace, pod, error)
            return hints, None
        own = pods.get(pod)
        siblings = [s for name, s in pods.items() if name != pod]
        return hints_with_forecast(hints, self.predictor, own, siblings, declared=declared)
