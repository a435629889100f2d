"""The operator's Prometheus metrics: each EnergyBudget's state, as its status says it.

Budgets' limits and use live in their status; Grafana's budget panels and
alerts want them as time series. The gauges are set from every watch event
of an EnergyBudget (so they show exactly what ``kubectl get eb`` shows) and
removed when the budget is deleted. Energy is in joules, the SI base unit,
like every other Lepton metric.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from lepton.api.v1alpha1 import held_watt_hours
from lepton.core.metering import JOULES_PER_WATT_HOUR

LABELS = ("namespace", "energybudget")
JOB_LABELS = ("namespace", "leptonjob", "job_uid", "energybudget")


class BudgetMetrics:
    """Gauges per (namespace, energybudget)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=self.registry)

        self.limit = gauge("lepton_energybudget_limit_joules", "The budget's limit per period.")
        self.consumed = gauge(
            "lepton_energybudget_consumed_joules", "Energy consumed this period (status)."
        )
        self.held = gauge(
            "lepton_energybudget_held_joules",
            "Energy held for admitted jobs beyond what they consumed so far.",
        )
        self.remaining = gauge(
            "lepton_energybudget_remaining_joules", "Energy left for new jobs this period."
        )
        self.admitted = gauge("lepton_energybudget_admitted_jobs", "Jobs admitted this period.")
        self.queued = gauge("lepton_energybudget_queued_jobs", "Jobs waiting for the budget.")
        self.job_consumed = Gauge(
            "lepton_leptonjob_consumed_joules",
            "Energy a LeptonJob has used in its lifetime, as its budget's books charge it "
            "(status.consumedWattHours), by the LeptonJob's UID.",
            JOB_LABELS,
            registry=self.registry,
        )
        self._job_labels: dict[tuple[str, str], tuple[str, str, str, str]] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        """Set the gauges from an EnergyBudget object."""
        meta, spec = body["metadata"], body.get("spec") or {}
        status = body.get("status") or {}
        labels = (meta["namespace"], meta["name"])
        self.limit.labels(*labels).set(float(spec.get("limitWattHours", 0)) * JOULES_PER_WATT_HOUR)
        for gauge, watt_hours in (
            (self.consumed, float(status.get("consumedWattHours") or 0.0)),
            (self.held, held_watt_hours(status)),
            (self.remaining, float(status.get("remainingWattHours") or 0.0)),
        ):
            gauge.labels(*labels).set(watt_hours * JOULES_PER_WATT_HOUR)
        self.admitted.labels(*labels).set(int(status.get("admittedJobs") or 0))
        self.queued.labels(*labels).set(int(status.get("queuedJobs") or 0))

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted budget's series."""
        gauges = (self.limit, self.consumed, self.held, self.remaining, self.admitted)
        for gauge in (*gauges, self.queued):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)

    def observe_job(self, body: Mapping[str, Any]) -> None:
        """Set a LeptonJob's gauge from its status."""
        meta, spec = body["metadata"], body.get("spec") or {}
        status = body.get("status") or {}
        labels = (meta["namespace"], meta["name"], meta["uid"], spec.get("budgetName", ""))
        key = (meta["namespace"], meta["uid"])
        old = self._job_labels.get(key)
        if old is not None and old != labels:
            with contextlib.suppress(KeyError):
                self.job_consumed.remove(*old)
        self._job_labels[key] = labels
        watt_hours = float(status.get("consumedWattHours") or 0.0)
        self.job_consumed.labels(*labels).set(watt_hours * JOULES_PER_WATT_HOUR)

    def forget_job(self, namespace: str, uid: str) -> None:
        """Drop a deleted LeptonJob's series."""
        labels = self._job_labels.pop((namespace, uid), None)
        if labels is not None:
            with contextlib.suppress(KeyError):
                self.job_consumed.remove(*labels)
