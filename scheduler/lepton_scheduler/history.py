"""Utilisation history from Prometheus, for the load predictor.

A range query of the exporter's per-GPU utilisation, averaged per node:
``avg by (node) (lepton_gpu_utilization_ratio)``. The predictor only sees
:class:`~lepton.core.predictor.Series`, so another source (a trace, a test,
another TSDB) fits behind the same ``node_utilization`` method.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime

from lepton.core.errors import LeptonError
from lepton.core.predictor import Series

DEFAULT_QUERY = "avg by (node) (lepton_gpu_utilization_ratio)"
# A pod's GPUs are those the exporter charges energy to it on: the GPU's utilisation is
# joined onto each (namespace, pod) holding it, then averaged over the pod's GPUs.
POD_QUERY = (
    "avg by (namespace, pod) (max by (node, gpu_uuid) (lepton_gpu_utilization_ratio)"
    " * on (node, gpu_uuid) group_right ()"
    " (0 * max by (node, gpu_uuid, namespace, pod) ({{__name__=~"
    '"lepton_pod_gpu_(idle|active)_energy_joules_total", namespace="{namespace}", pod=~"{pods}"}})'
    " + 1))"
)
# Prometheus refuses range queries of more than 11,000 points per series.
MAX_POINTS = 11_000


class HistoryError(LeptonError, RuntimeError):
    """Prometheus could not answer; the message says what it said."""


class PrometheusHistory:
    """``HistorySource`` backed by Prometheus's HTTP API (``/api/v1/query_range``)."""

    def __init__(self, url: str, query: str = DEFAULT_QUERY, timeout_seconds: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.query = query
        self.timeout_seconds = timeout_seconds

    def node_utilization(
        self, start: datetime, end: datetime, step_seconds: float
    ) -> Mapping[str, Series]:
        return self._range(self.query, "node", start, end, step_seconds)

    def pod_utilization(
        self, namespace: str, pods: str, start: datetime, end: datetime, step_seconds: float
    ) -> Mapping[str, Series]:
        """Each pod's GPU utilisation (0..1), by pod name, for pods matching the regex ``pods``.

        A pod's utilisation is that of the GPUs it holds (the exporter charges their
        energy to it): on a shared GPU, the whole GPU's, an upper bound of the pod's own.
        """
        query = POD_QUERY.format(namespace=_quoted(namespace), pods=_quoted(pods))
        return self._range(query, "pod", start, end, step_seconds)

    def _range(
        self, query: str, key: str, start: datetime, end: datetime, step_seconds: float
    ) -> dict[str, Series]:
        span = max(0.0, end.timestamp() - start.timestamp())
        step = max(step_seconds, span / MAX_POINTS, 1.0)
        params = urllib.parse.urlencode(
            {"query": query, "start": start.timestamp(), "end": end.timestamp(), "step": step}
        )
        try:
            with urllib.request.urlopen(
                f"{self.url}/api/v1/query_range?{params}", timeout=self.timeout_seconds
            ) as response:
                body = json.load(response)
        except (OSError, ValueError) as error:
            raise HistoryError(f"Prometheus at {self.url} did not answer: {error}") from error
        if body.get("status") != "success":
            raise HistoryError(f"Prometheus at {self.url}: {body.get('error', body)}")
        out: dict[str, Series] = {}
        for result in body.get("data", {}).get("result", []):
            name = result.get("metric", {}).get(key)
            if not name:
                continue
            points = [(float(t), float(v)) for t, v in result.get("values", [])]
            out[name] = Series.of(points)
        return out


def _quoted(value: str) -> str:
    """``value`` inside a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
