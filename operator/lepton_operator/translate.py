"""Translation between Kubernetes objects (dicts) and the core's budget values, without I/O.

The handlers read objects from the API, call these to get the core's dataclasses, let the core
decide (:mod:`lepton.core.budget`), and call these again to turn the decision into status
bodies. Keeping them apart from the handlers lets them be tested with plain dicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lepton.api.v1alpha1 import (
    ConsumptionSource,
    EnergyBudgetSpec,
    LeptonJobState,
    WhenExhausted,
)
from lepton.core.budget import BudgetState, Reservation
from lepton.core.times import format_time, parse_time

# Condition types and reasons (Kueue's Workload conditions, adapted).
BUDGET_RESERVED = "BudgetReserved"
ADMITTED = "Admitted"
RUNNING = "Running"
FINISHED = "Finished"
EVICTED = "Evicted"
POWER_CAPPED = "PowerCapped"
ACTIVE = "Active"
EXHAUSTED = "Exhausted"


def _format_precise(value: datetime) -> str:
    # Period starts keep microseconds: rounding them would shift the period schedule.
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def budget_state(budget: Mapping[str, Any], now: datetime) -> BudgetState:
    """The core's books of a budget, from its spec and the status the operator wrote."""
    spec = EnergyBudgetSpec.model_validate(budget.get("spec") or {})
    status = budget.get("status") or {}
    start = parse_time(status.get("periodStartTime")) or now
    reservations = tuple(
        Reservation(
            job_uid=r["jobUid"],
            job_name=r.get("jobName", ""),
            gpu_model=r.get("gpuModel", ""),
            reserved_watt_hours=float(r.get("reservedWattHours", 0.0)),
            consumed_watt_hours=float(r.get("consumedWattHours", 0.0)),
            baseline_watt_hours=float(r.get("baselineWattHours", 0.0)),
            admitted_time=parse_time(r.get("admittedTime")),
        )
        for r in status.get("reservations") or []
    )
    return BudgetState(
        limit_watt_hours=float(spec.limit_watt_hours),
        period_seconds=spec.period_seconds,
        period_start=start,
        settled_watt_hours=float(status.get("settledWattHours", 0.0)),
        reservations=reservations,
        settled_job_uids=frozenset(status.get("settledJobUids") or ()),
        settled_overrun_watt_hours=float(status.get("settledOverrunWattHours", 0.0)),
    )


def condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    previous: Sequence[Mapping[str, Any]] = (),
    generation: int | None = None,
) -> dict[str, Any]:
    """A condition; its lastTransitionTime moves only when its status changes."""
    status_text = "True" if status else "False"
    transition = format_time(now)
    for old in previous:
        if old.get("type") == type_ and old.get("status") == status_text:
            transition = old.get("lastTransitionTime") or transition
    cond: dict[str, Any] = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def budget_status(
    state: BudgetState,
    *,
    queued_jobs: int,
    when_exhausted: WhenExhausted,
    previous: Mapping[str, Any],
    generation: int | None,
    now: datetime,
    closed: BudgetState | None = None,
) -> dict[str, Any]:
    """The EnergyBudget status body for the books in ``state``; ``closed`` is the final books of
    the period this pass ended (else the previous status' figures are kept)."""
    old_conditions = previous.get("conditions") or []
    exhausted = state.exhausted
    last_period = (
        {
            "previousPeriodStartTime": _format_precise(closed.period_start),
            "previousPeriodConsumedWattHours": round(closed.consumed_watt_hours, 6),
        }
        if closed is not None
        else {
            k: previous[k]
            for k in ("previousPeriodStartTime", "previousPeriodConsumedWattHours")
            if k in previous
        }
    )
    return {
        **last_period,
        "observedGeneration": generation,
        "periodStartTime": _format_precise(state.period_start),
        "consumedWattHours": round(state.consumed_watt_hours, 6),
        "settledWattHours": state.settled_watt_hours,
        "heldWattHours": round(state.held_watt_hours, 6),
        "overrunWattHours": round(state.overrun_watt_hours, 6),
        "overLimitWattHours": round(state.over_limit_watt_hours, 6),
        "settledOverrunWattHours": state.settled_overrun_watt_hours,
        "remainingWattHours": round(state.remaining_watt_hours, 6),
        "admittedJobs": len(state.reservations),
        "queuedJobs": queued_jobs,
        "reservations": [
            {
                "jobUid": r.job_uid,
                "jobName": r.job_name,
                "gpuModel": r.gpu_model,
                "reservedWattHours": r.reserved_watt_hours,
                "consumedWattHours": r.consumed_watt_hours,
                "baselineWattHours": r.baseline_watt_hours,
                **({"admittedTime": format_time(r.admitted_time)} if r.admitted_time else {}),
            }
            for r in state.reservations
        ],
        "settledJobUids": sorted(state.settled_job_uids),
        "conditions": [
            condition(
                ACTIVE,
                True,
                "PeriodOpen",
                f"period ends at {format_time(state.period_end)}",
                now,
                old_conditions,
                generation,
            ),
            condition(
                EXHAUSTED,
                exhausted,
                "LimitReached" if exhausted else "WithinLimit",
                (
                    f"consumed {state.consumed_watt_hours:.2f} Wh of "
                    f"{state.limit_watt_hours:.0f} Wh"
                    + (f"; whenExhausted={when_exhausted.value} applies" if exhausted else "")
                    + (
                        f"; {state.overrun_watt_hours:.2f} Wh metered beyond the jobs' reservations"
                        if state.overrun_watt_hours > 0
                        else ""
                    )
                    + (
                        f"; admitted jobs hold {state.over_limit_watt_hours:.2f} Wh beyond the "
                        "lowered limit: they keep running, new jobs wait until it is gone"
                        if state.over_limit_watt_hours > 0
                        else ""
                    )
                ),
                now,
                old_conditions,
                generation,
            ),
        ],
    }


@dataclass(frozen=True)
class JobObservation:
    """What the child Job says about a LeptonJob's run."""

    exists: bool
    suspended: bool = True
    active: int = 0
    succeeded: bool = False
    failed: bool = False
    start_time: datetime | None = None
    completion_time: datetime | None = None

    @property
    def finished(self) -> bool:
        """The Job completed or failed."""
        return self.succeeded or self.failed


def observe_job(job: Mapping[str, Any] | None) -> JobObservation:
    """Read a batch/v1 Job's state."""
    if job is None:
        return JobObservation(exists=False)
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    completion = parse_time(status.get("completionTime"))
    failed_at = parse_time((conds.get("Failed") or {}).get("lastTransitionTime"))
    return JobObservation(
        exists=True,
        suspended=bool(spec.get("suspend")),
        # Pending pods count as active in a Job; only ready pods are running.
        active=int(status.get("ready") or 0),
        succeeded="Complete" in conds,
        failed="Failed" in conds,
        start_time=parse_time(status.get("startTime")),
        completion_time=completion or failed_at,
    )


def job_state(observation: JobObservation, admitted: bool, evicted: bool) -> LeptonJobState:
    """The one-word state of a LeptonJob."""
    if observation.succeeded:
        return LeptonJobState.FINISHED
    if observation.failed:
        return LeptonJobState.FAILED
    if not admitted:
        return LeptonJobState.WAITING
    if evicted:
        return LeptonJobState.SUSPENDED
    if observation.active > 0:
        return LeptonJobState.RUNNING
    return LeptonJobState.ADMITTED


def source_label(measured: bool) -> str:
    """The consumptionSource value."""
    return (ConsumptionSource.MEASURED if measured else ConsumptionSource.ESTIMATED).value


def sum_phases(annotations: Iterable[str | None]) -> list[dict[str, Any]]:
    """The SDK's per-pod phase tables (``lepton.dev/phases`` JSON), summed by phase name.

    An unreadable annotation is skipped: it is the job's own output, and must never stop the
    operator from accounting the job.
    """
    totals: dict[str, dict[str, Any]] = {}
    for raw in annotations:
        if not raw:
            continue
        try:
            doc = json.loads(raw)
            phases = doc["phases"] if isinstance(doc, dict) else []
            for phase in phases:
                entry = totals.setdefault(
                    str(phase["name"]),
                    {
                        "name": str(phase["name"]),
                        "count": 0,
                        "durationSeconds": 0.0,
                        "energyWattHours": 0.0,
                        "estimated": False,
                    },
                )
                entry["count"] += int(phase.get("count", 0))
                entry["durationSeconds"] = round(
                    entry["durationSeconds"] + float(phase.get("durationSeconds", 0.0)), 3
                )
                entry["energyWattHours"] = round(
                    entry["energyWattHours"] + float(phase.get("energyWattHours", 0.0)), 6
                )
                entry["estimated"] = entry["estimated"] or bool(phase.get("estimated", False))
        except (ValueError, KeyError, TypeError):
            continue
    return list(totals.values())


Interval = tuple[datetime, datetime]


def pod_is_running(pod: Mapping[str, Any]) -> bool:
    """Whether one of the pod's containers runs (by this copy of the pod)."""
    return any(
        (cs.get("state") or {}).get("running")
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
    )


def pod_running_interval(pod: Mapping[str, Any], now: datetime) -> Interval | None:
    """When a pod's containers ran: from the first start to the last end, or to ``now`` while
    one still runs. A Pending pod, whose containers never started, ran for no time."""
    starts: list[datetime] = []
    ends: list[datetime] = []
    running = False
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        if started := parse_time((state.get("running") or {}).get("startedAt")):
            starts.append(started)
            running = True
        terminated = state.get("terminated") or {}
        if (started := parse_time(terminated.get("startedAt"))) and (
            ended := parse_time(terminated.get("finishedAt"))
        ):
            starts.append(started)
            ends.append(ended)
    if not starts:
        return None
    end = now if running else max(ends)
    return (min(starts), max(min(starts), end))


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of intervals, as sorted disjoint intervals."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def run_intervals(
    previous: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: datetime
) -> list[Interval]:
    """The job's running time so far: what its status recorded (pods since deleted, a suspended
    run) united with what its pods show now."""
    recorded = [
        (start, end)
        for r in previous.get("runIntervals") or []
        if (start := parse_time(r.get("start"))) and (end := parse_time(r.get("end")))
    ]
    seen = [i for p in pods if (i := pod_running_interval(p, now)) is not None]
    return merge_intervals([*recorded, *seen])


def run_seconds(intervals: Iterable[Interval]) -> float:
    """The length of a union of disjoint intervals."""
    return sum((end - start).total_seconds() for start, end in intervals)


def format_intervals(intervals: Iterable[Interval]) -> list[dict[str, str]]:
    """Run intervals as status writes them."""
    # Microseconds kept: the charge is computed from these, and must replay exactly.
    return [{"start": _format_precise(s), "end": _format_precise(e)} for s, e in intervals]
