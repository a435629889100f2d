"""Measured job energy from Prometheus (the exporter's per-pod GPU energy counters).

The query is a template so that a site can point it at another metric (dcgm-exporter's
``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``, Kepler's ``kepler_container_joules_total``); the
client is a small Protocol so that tests substitute a fake.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Protocol

# The exporter's per-pod counter (see exporter/): joules of GPU energy attributed to a pod.
# ``max_over_time`` keeps the last value of pods that have ended; the sum adds a job's pods.
DEFAULT_QUERY_TEMPLATE = (
    "sum(max_over_time(lepton_pod_gpu_active_energy_joules_total"
    '{{namespace="{namespace}",pod=~"{job_name}-[a-z0-9]+"}}[{range_seconds}s]))'
)
JOULES_PER_WATT_HOUR = 3600.0


class EnergySource(Protocol):
    """Where measured job energy comes from."""

    def job_watt_hours(self, namespace: str, job_name: str, range_seconds: int) -> float | None:
        """The job's measured lifetime energy, or None when there is no measurement."""


class PrometheusEnergySource:
    """Asks Prometheus' HTTP API (``/api/v1/query``) with the query template."""

    def __init__(
        self,
        url: str,
        query_template: str = DEFAULT_QUERY_TEMPLATE,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.query_template = query_template
        self.timeout_seconds = timeout_seconds

    def query(self, promql: str) -> float | None:
        """The scalar value of an instant query; None for an empty result."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=self.timeout_seconds) as response:
            payload = json.load(response)
        if payload.get("status") != "success":
            raise RuntimeError(f"Prometheus query failed: {payload.get('error')!r} for {promql}")
        result = payload["data"]["result"]
        if not result:
            return None
        return float(result[0]["value"][1])

    def job_watt_hours(self, namespace: str, job_name: str, range_seconds: int) -> float | None:
        promql = self.query_template.format(
            namespace=namespace, job_name=job_name, range_seconds=max(60, range_seconds)
        )
        joules = self.query(promql)
        return None if joules is None else joules / JOULES_PER_WATT_HOUR
