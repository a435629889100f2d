"""Reading Prometheus text from a component's /metrics, for the benchmarks' JSON.

Two readers: the Lepton scheduler's per-stage histogram
(``lepton_scheduler_phase_duration_seconds``) as a mean per verb and stage, and any
histogram's count and sum by one label (kube-scheduler's
``scheduler_scheduling_attempt_duration_seconds`` by ``result``).
"""

from __future__ import annotations

import ssl
import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PHASE_METRIC = "lepton_scheduler_phase_duration_seconds"
REQUEST_METRIC = "lepton_scheduler_request_duration_seconds"
REUSE_METRIC = "lepton_scheduler_prioritize_reuse"  # a counter's family name, without _total
ATTEMPT_METRIC = "scheduler_scheduling_attempt_duration_seconds"
ALGORITHM_METRIC = "scheduler_scheduling_algorithm_duration_seconds"
EXTENSION_POINT_METRIC = "scheduler_framework_extension_point_duration_seconds"


def fetch(url: str, timeout: float = 10) -> str:
    """The body of ``url``; https without verifying (the local cluster's own certificates)."""
    context = ssl._create_unverified_context() if url.startswith("https://") else None
    with urllib.request.urlopen(url, timeout=timeout, context=context) as reply:
        return str(reply.read().decode())


def histogram_totals(text: str, name: str, by: str) -> dict[str, dict[str, float]]:
    """``{label value: {"count": n, "sum_seconds": s}}`` of histogram ``name``, summed by ``by``."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"count": 0.0, "sum_seconds": 0.0})
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            key = sample.labels.get(by, "")
            if sample.name == f"{name}_count":
                out[key]["count"] += sample.value
            elif sample.name == f"{name}_sum":
                out[key]["sum_seconds"] += sample.value
    return dict(out)


def phase_breakdown(text: str) -> dict[str, Any]:
    """Per verb: calls, mean milliseconds per stage and per request, from the Lepton scheduler;
    and how often prioritize reused filter's computation."""
    phases: dict[str, dict[str, float]] = defaultdict(dict)
    calls: dict[str, float] = {}
    reuse: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REUSE_METRIC:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    reuse[sample.labels.get("result", "")] = sample.value
        if family.name not in (PHASE_METRIC, REQUEST_METRIC):
            continue
        sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for sample in family.samples:
            key = (sample.labels.get("verb", ""), sample.labels.get("phase", ""))
            if sample.name.endswith("_count"):
                sums[key][0] += sample.value
            elif sample.name.endswith("_sum"):
                sums[key][1] += sample.value
        for (verb, phase), (count, total) in sums.items():
            if not count:
                continue
            if family.name == REQUEST_METRIC:
                calls[verb] = count
                phases[verb]["request_mean_ms"] = round(1000 * total / count, 4)
            else:
                phases[verb][f"{phase}_mean_ms"] = round(1000 * total / count, 4)
    out: dict[str, Any] = {
        verb: {"calls": calls.get(verb, 0), **values} for verb, values in phases.items()
    }
    if reuse:  # prioritize answered from filter's computation (hit) or afresh (miss)
        out["prioritize_reuse"] = reuse
    return out
