"""Measured job energy from Prometheus (the exporter's per-pod GPU energy counters).

The query is a template so that a site can point it at another metric (dcgm-exporter's
``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``, Kepler's ``kepler_container_joules_total``); the
client is a small Protocol so that tests substitute a fake.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

# The exporter's per-pod counter (see exporter/): joules of GPU energy attributed to a pod.
# ``max_over_time`` keeps the last value of pods that have ended; the sum adds a job's pods.
# A Job's pods are named <job>-<suffix>, or <job>-<index>-<suffix> for an Indexed Job.
JOB_PODS = '{{namespace="{namespace}",pod=~"{job_name}-([0-9]+-)?[a-z0-9]+"}}'
DEFAULT_QUERY_TEMPLATE = (
    f"sum(max_over_time(lepton_pod_gpu_active_energy_joules_total{JOB_PODS}[{{range_seconds}}s]))"
)
# Which exporter backends produced the job's series: `model` means estimated, not metered.
DEFAULT_SOURCE_QUERY_TEMPLATE = (
    f"count by (source) (last_over_time(lepton_pod_gpu_active_energy_joules_total{JOB_PODS}"
    "[{range_seconds}s]))"
)
JOULES_PER_WATT_HOUR = 3600.0
MODEL_SOURCE = "model"


@dataclass(frozen=True)
class JobEnergy:
    """A job's energy as Prometheus reports it, and whether a meter or the model produced it."""

    watt_hours: float
    estimated: bool


class EnergySource(Protocol):
    """Where job energy from the exporters comes from."""

    def job_energy(self, namespace: str, job_name: str, range_seconds: int) -> JobEnergy | None:
        """The job's lifetime energy, or None when Prometheus has no series for it."""


class PrometheusEnergySource:
    """Asks Prometheus' HTTP API (``/api/v1/query``) with the query template."""

    def __init__(
        self,
        url: str,
        query_template: str = DEFAULT_QUERY_TEMPLATE,
        timeout_seconds: float = 5.0,
        source_query_template: str | None = DEFAULT_SOURCE_QUERY_TEMPLATE,
    ) -> None:
        self.url = url.rstrip("/")
        self.query_template = query_template
        # A custom query (dcgm-exporter, Kepler) reads meters: no source check applies.
        self.source_query_template = (
            source_query_template if query_template == DEFAULT_QUERY_TEMPLATE else None
        )
        self.timeout_seconds = timeout_seconds

    def _vector(self, promql: str) -> list[dict[str, Any]]:
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=self.timeout_seconds) as response:
            payload = json.load(response)
        if payload.get("status") != "success":
            raise RuntimeError(f"Prometheus query failed: {payload.get('error')!r} for {promql}")
        return list(payload["data"]["result"])

    def query(self, promql: str) -> float | None:
        """The scalar value of an instant query; None for an empty result."""
        result = self._vector(promql)
        return float(result[0]["value"][1]) if result else None

    def job_energy(self, namespace: str, job_name: str, range_seconds: int) -> JobEnergy | None:
        args = {
            "namespace": namespace,
            "job_name": job_name,
            "range_seconds": max(60, range_seconds),
        }
        joules = self.query(self.query_template.format(**args))
        if joules is None:
            return None
        estimated = False
        if self.source_query_template is not None:
            sources = {
                r["metric"].get("source", "")
                for r in self._vector(self.source_query_template.format(**args))
            }
            estimated = MODEL_SOURCE in sources
        return JobEnergy(joules / JOULES_PER_WATT_HOUR, estimated)
