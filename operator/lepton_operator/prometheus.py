"""Measured job energy from Prometheus (the exporter's per-pod GPU energy counters).

A job's series are chosen by its pods' exact names — the pods the apiserver lists under the
LeptonJob's UID label, and those the LeptonJob's status remembers — never by a pattern on the
job's name (``train`` must not count the pods of ``train-2``). Values are escaped for PromQL.

The default path reads the raw counter samples over the job's lifetime and sums each series'
increases itself, treating a drop as a counter reset (an exporter restart starts its counters
at zero again): nothing a series counted before a reset is lost, which ``max_over_time`` would
lose. A site may give its own query template instead (dcgm-exporter, Kepler); it must return
one scalar, the job's joules, and may use the placeholders ``{namespace}``, ``{pods}`` (an
exact-match alternation for ``pod=~"…"``) and ``{range_seconds}``.
"""

from __future__ import annotations

import itertools
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from lepton.core.metering import JOULES_PER_WATT_HOUR

# What a budget pays for (docs/decisions/0006-energy-books.md): the GPUs' active draw charged to
# the pod plus the idle draw of what the pod holds — the basis of the estimate it reserved.
CHARGED_METRICS = (
    "lepton_pod_gpu_active_energy_joules_total",
    "lepton_pod_gpu_idle_energy_joules_total",
)
# The charged counters' names as one exact-match pattern (``__name__=~"…"``): the operator's
# query and the budgets dashboard select with it, so both count the same energy.
CHARGED_METRICS_PATTERN = "|".join(re.escape(m) for m in CHARGED_METRICS)
DEFAULT_QUERY_TEMPLATE = "default"
# A series whose newest sample is this much older than the job's newest is a pod gone for good
# (its exporter's retention ended), not one whose last samples are still to come.
STALE_SERIES_SECONDS = 300.0
MODEL_SOURCE = "model"


def promql_string(value: str) -> str:
    """``value`` as the body of a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exact_alternation(values: Iterable[str]) -> str:
    """An RE2 pattern matching exactly these values (PromQL anchors ``=~`` itself)."""
    return "|".join(re.escape(v) for v in sorted(set(values)))


def series_selector(namespace: str, pods: Iterable[str]) -> str:
    """The selector of the charged counters of exactly these pods of one namespace."""
    return (
        f'{{__name__=~"{promql_string(CHARGED_METRICS_PATTERN)}",namespace="{promql_string(namespace)}",'
        f'pod=~"{promql_string(exact_alternation(pods))}"}}'
    )


def reset_safe_total(values: Sequence[float]) -> float:
    """A counter's total over its samples: each increase, and after a drop (a reset) the new
    value in full. The first sample counts in full: the exporter starts a pod's counter at zero."""
    if not values:
        return 0.0
    total = values[0]
    for before, after in itertools.pairwise(values):
        total += after - before if after >= before else after
    return total


@dataclass(frozen=True)
class JobEnergy:
    """A job's energy as Prometheus reports it, and whether a meter or the model produced it."""

    watt_hours: float
    estimated: bool
    # The oldest of the job's series' newest samples: the figure counts what the meters had
    # counted by then (None where a custom query does not say).
    sampled_until: datetime | None = None


class EnergySource(Protocol):
    """Where job energy from the exporters comes from."""

    def job_energy(
        self, namespace: str, pods: Sequence[str], range_seconds: int, at: datetime | None = None
    ) -> JobEnergy | None:
        """The lifetime energy of the job whose pods are ``pods`` (up to ``at``, else now);
        None when Prometheus has no series for them."""


class PrometheusEnergySource:
    """Asks Prometheus' HTTP API (``/api/v1/query``)."""

    def __init__(
        self,
        url: str,
        query_template: str = DEFAULT_QUERY_TEMPLATE,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.query_template = query_template
        self.timeout_seconds = timeout_seconds

    def _result(self, promql: str, at: datetime | None = None) -> list[dict[str, Any]]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(address, timeout=self.timeout_seconds) as response:
            payload = json.load(response)
        if payload.get("status") != "success":
            raise RuntimeError(f"Prometheus query failed: {payload.get('error')!r} for {promql}")
        return list(payload["data"]["result"])

    def query(self, promql: str, at: datetime | None = None) -> float | None:
        """The scalar value of an instant query (at ``at``, else now); None for an empty result."""
        result = self._result(promql, at)
        return float(result[0]["value"][1]) if result else None

    def job_energy(
        self, namespace: str, pods: Sequence[str], range_seconds: int, at: datetime | None = None
    ) -> JobEnergy | None:
        if not pods:
            return None
        window = max(60, int(range_seconds))
        if self.query_template != DEFAULT_QUERY_TEMPLATE:
            # A custom query reads meters (dcgm-exporter, Kepler): no source check applies.
            joules = self.query(
                self.query_template.format(
                    namespace=promql_string(namespace),
                    pods=promql_string(exact_alternation(pods)),
                    range_seconds=window,
                ),
                at,
            )
            return None if joules is None else JobEnergy(joules / JOULES_PER_WATT_HOUR, False)
        matrix = self._result(f"{series_selector(namespace, pods)}[{window}s]", at)
        if not matrix:
            return None
        joules = sum(reset_safe_total([float(v) for _, v in s["values"]]) for s in matrix)
        estimated = any(s["metric"].get("source") == MODEL_SOURCE for s in matrix)
        # The series still scraped (not those of pods gone for minutes) must all have caught up.
        newest = [float(s["values"][-1][0]) for s in matrix]
        current = [t for t in newest if t >= max(newest) - STALE_SERIES_SECONDS]
        return JobEnergy(
            joules / JOULES_PER_WATT_HOUR, estimated, datetime.fromtimestamp(min(current), UTC)
        )
