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
        span = max(0.0, end.timestamp() - start.timestamp())
        step = max(step_seconds, span / MAX_POINTS, 1.0)
        params = urllib.parse.urlencode(
            {"query": self.query, "start": start.timestamp(), "end": end.timestamp(), "step": step}
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
            node = result.get("metric", {}).get("node")
            if not node:
                continue
            points = [(float(t), float(v)) for t, v in result.get("values", [])]
            out[node] = Series.of(points)
        return out
