"""One pass over an EnergyBudget: account, release, admit, enforce — then act on the decisions.

A pass reads the budget, its LeptonJobs and their Jobs, lets :mod:`lepton.core.budget` decide,
writes the budget's new books with a resourceVersion precondition, and only then touches the
jobs (un-suspend, suspend, status). The budget's ``status.reservations`` (keyed by LeptonJob
UID) is the source of truth: if the operator dies after the budget write, the next pass finds
the reservation and finishes the job's admission without reserving again; if it dies before,
nothing happened. Passes over one budget never overlap (the caller holds a lock per budget).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lepton.api.jobspec import (
    EnergyEstimate,
    build_job,
    estimate_energy,
    estimated_consumption_watt_hours,
)
from lepton.api.v1alpha1 import (
    EnergyBudgetSpec,
    LeptonJobSpec,
    LeptonJobState,
    WhenExhausted,
)
from lepton.core.budget import (
    BudgetState,
    Candidate,
    Waiting,
    WaitReason,
    budget_pressure,
    consume,
    forget_settled,
    hold_only_used,
    plan_admissions,
    release,
    roll_over,
)
from lepton.core.errors import LeptonError
from lepton.core.names import (
    ANNOTATION_PHASES,
    ANNOTATION_POWER_LIMIT_WATTS,
    API_VERSION,
    LABEL_JOB_UID,
    SCHEDULER_NAME,
)
from lepton.core.profiles import get_profile
from lepton.core.times import format_time, parse_time

from . import translate as tr
from .kube import ConflictError, KubeApi
from .prometheus import EnergySource

log = logging.getLogger("lepton.operator")

# A waiting job's message quotes the budget's numbers, which move every second while jobs run;
# rewriting hundreds of statuses each second would load the apiserver for nothing.
WAITING_MESSAGE_REFRESH_SECONDS = 15.0
# The states a LeptonJob does not leave.
FINAL_STATES = frozenset({LeptonJobState.FINISHED.value, LeptonJobState.FAILED.value})
# A job's status rounds its figure to 6 decimals (a microwatt-hour): what the budget holds
# within that is the same figure.
SETTLE_TOLERANCE_WATT_HOURS = 1e-6


@dataclass
class OperatorConfig:
    """What the operator was started with."""

    scheduler_name: str = SCHEDULER_NAME
    energy_source: EnergySource | None = None
    interval_seconds: float = 1.0
    workers: int = 16


@dataclass(frozen=True)
class EventNote:
    """An Event to post about an object (posted by the async handler, not the worker thread)."""

    obj: dict[str, Any]
    type: str
    reason: str
    message: str


@dataclass
class PassMemory:
    """What passes remember between runs (lost on restart, which costs only extra writes)."""

    waiting_written: dict[str, float] = field(default_factory=dict)
    estimates: dict[tuple[str, int], EnergyEstimate] = field(default_factory=dict)


def _ref(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }


def _estimate(lj: Mapping[str, Any], memory: PassMemory) -> EnergyEstimate:
    key = (lj["metadata"]["uid"], int(lj["metadata"].get("generation") or 0))
    if key not in memory.estimates:
        memory.estimates[key] = estimate_energy(LeptonJobSpec.model_validate(lj["spec"]))
    return memory.estimates[key]


def _selector_allows(spec: EnergyBudgetSpec, lj: Mapping[str, Any]) -> bool:
    if spec.job_selector is None:
        return True
    labels = lj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in spec.job_selector.match_labels.items())


@dataclass(frozen=True)
class Usage:
    """A job's lifetime energy and where the figure comes from."""

    watt_hours: float
    measured: bool
    sampled_until: datetime | None = None  # a meter's figure: what it had counted by then


def pod_names(lj: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """The job's pods: those listed under its UID label now, and those its status remembers
    (a suspended or retried job's earlier pods are gone from the API, not from the meter)."""
    remembered = [p.get("pod") for p in (lj.get("status") or {}).get("placements") or []]
    listed = [p["metadata"]["name"] for p in pods]
    return sorted({n for n in (*remembered, *listed) if n})


def measure(
    lj: Mapping[str, Any],
    observation: tr.JobObservation,
    estimate: EnergyEstimate | None,
    config: OperatorConfig,
    now: datetime,
    pods: Sequence[Mapping[str, Any]] = (),
    until: datetime | None = None,
) -> Usage | None:
    """The job's energy so far: from the exporters via Prometheus when it has the job's
    series (labelled Estimated when those come from the exporter's model backend), else
    the energy model's estimate from run time. ``until`` (a past instant: the start of a new
    period) asks for what the job had used by then only, not its lifetime figure so far."""
    status = lj.get("status") or {}
    # The lifetime figure never goes back; one up to a past instant may be below it.
    previous = float(status.get("consumedWattHours") or 0.0) if until is None else 0.0
    at = until or now
    admitted = parse_time(status.get("admittedTime")) or observation.start_time
    if config.energy_source is not None and admitted is not None:
        range_seconds = int((at - admitted).total_seconds()) + 60
        try:
            reported = config.energy_source.job_energy(
                lj["metadata"]["namespace"], pod_names(lj, pods), range_seconds, at=until
            )
        except Exception as error:  # a Prometheus outage must not stop admission
            log.warning("prometheus query failed, estimating instead: %s", error)
            reported = None
        if reported is not None:
            return Usage(
                max(previous, reported.watt_hours),
                measured=not reported.estimated,
                sampled_until=reported.sampled_until,
            )
    # No meter: the estimate's power for as long as the pods ran (not since the Job's
    # startTime, which Kubernetes sets while pods are still Pending and resets on resume).
    intervals = [(s, min(e, at)) for s, e in tr.run_intervals(status, pods, at) if s < at]
    ran = tr.run_seconds(intervals)
    if estimate is None or ran <= 0:
        return Usage(previous, measured=False) if previous else None
    return Usage(max(previous, estimated_consumption_watt_hours(estimate, ran)), False)


class StillSettlingError(LeptonError):
    """The closing pass over a budget being deleted committed, but a job that ended is not
    settled yet (its pods' cache or its meter lags, or its final status was just written):
    the budget must not go before it is. Carries the pass's events, to post all the same."""

    def __init__(self, events: list[EventNote], jobs: Sequence[str]) -> None:
        super().__init__(f"still settling {', '.join(jobs)}")
        self.events = events


@dataclass(frozen=True)
class Snapshot:
    """What a pass reads about one namespace besides the budget (a cache may be a little
    behind: every decision it feeds is committed through the budget's conditional write, and
    every job status write is conditional on the resourceVersion it was decided from)."""

    lepton_jobs: Sequence[dict[str, Any]]
    jobs: Sequence[dict[str, Any]]
    pods: Sequence[dict[str, Any]]


@dataclass
class JobPlan:
    """What one pass decided about one LeptonJob."""

    lj: dict[str, Any]
    observation: tr.JobObservation
    pods: list[dict[str, Any]] = field(default_factory=list)
    estimate: EnergyEstimate | None = None
    usage: Usage | None = None
    released: bool = False
    finishing: bool = False  # ended: its final status is written before the budget settles it
    waiting: Waiting | None = None
    blocked_reason: str | None = None  # InvalidSpec, SelectorMismatch
    blocked_message: str = ""
    deleting: bool = False  # the LeptonJob is being deleted: settle it, touch nothing
    deferred: bool = False  # its Job ended but its pods' cache has not: settle it next pass
    stopping: bool = False  # being deleted while its pods run: stop them, settle it after
    closing: bool = False  # its budget is being deleted: suspend it


# How long after its Job ended a pod may still look running in the watch cache before the job is
# settled anyway (charged up to now): past this the cache is not lagging, the pod is stuck.
POD_CACHE_LAG_SECONDS = 30.0


# How long a deleted LeptonJob's pods may take to stop (suspending its Job deletes them, with
# their termination grace period) before it is settled anyway, charged up to now.
POD_STOP_SECONDS = 120.0


def _pods_still_run_after_deletion(plan: JobPlan, now: datetime) -> bool:
    """The LeptonJob is being deleted and one of its pods still runs: its energy until it has
    stopped is the job's, so it is settled once it has (or after POD_STOP_SECONDS)."""
    deleted = parse_time(plan.lj["metadata"].get("deletionTimestamp"))
    if not plan.deleting or deleted is None:
        return False
    if (now - deleted).total_seconds() > POD_STOP_SECONDS:
        return False
    return any(tr.pod_is_running(pod) for pod in plan.pods)


# A meter's figure settles a finished job once its samples are this much newer than the Job's end
# (the exporter samples, and Prometheus scrapes, every few seconds), or this long after it ends.
METER_SETTLE_MARGIN_SECONDS = 5.0
METER_LAG_SECONDS = 60.0


def _ended_at(plan: JobPlan, now: datetime) -> datetime | None:
    """When the job's pods stopped: its Job's end, or for a job being deleted (its Job
    suspended) the end of its pods' last run once none runs; None while they may run."""
    if plan.observation.finished:
        return plan.observation.completion_time
    gone = plan.deleting or plan.closing  # its Job was suspended by the pass
    if not gone or plan.stopping or any(tr.pod_is_running(p) for p in plan.pods):
        return None
    intervals = tr.run_intervals(plan.lj.get("status") or {}, plan.pods, now)
    return max((end for _, end in intervals), default=None)


def _meter_lags(plan: JobPlan, now: datetime) -> bool:
    """The job's pods stopped (its Job ended, or it is being deleted), but the meter's newest
    samples of them are from before the end (plus a sampling margin): settling now would leave
    its last seconds' energy in no book."""
    ended = _ended_at(plan, now)
    sampled = plan.usage.sampled_until if plan.usage else None
    if ended is None or sampled is None:
        return False
    if (now - ended).total_seconds() > METER_LAG_SECONDS:
        return False
    return (sampled - ended).total_seconds() < METER_SETTLE_MARGIN_SECONDS


def _pod_cache_lags(plan: JobPlan, now: datetime) -> bool:
    """The Job ended, yet one of its pods still runs by the cache (the Job's and the pods'
    watches are separate streams): settling now would charge that pod until now, and a pass
    re-measuring it later (its final status lost to a crash) would charge less. The same
    holds for a job being deleted: its stale pod would be charged until its pass."""
    ended = plan.observation.completion_time
    if not plan.observation.finished or ended is None:
        return False
    if (now - ended).total_seconds() > POD_CACHE_LAG_SECONDS:
        return False
    return any(tr.pod_is_running(pod) for pod in plan.pods)


def reconcile_budget(
    api: KubeApi,
    config: OperatorConfig,
    memory: PassMemory,
    namespace: str,
    name: str,
    now: datetime,
    *,
    closing: bool = False,
    snapshot: Snapshot | None = None,
) -> list[EventNote]:
    """One pass over a budget. Raises kube.ConflictError when the budget changed meanwhile.

    LeptonJobs being deleted are settled (their energy so far consumed, their reservation
    released) and left alone. ``closing`` is the last pass over a budget being deleted: it
    accounts, admits nothing, suspends every admitted job and records the final books.
    ``snapshot`` is the namespace's LeptonJobs, Jobs and pods from the operator's watch caches;
    without it the pass lists them. The budget itself is always read fresh: its
    resourceVersion is the precondition of the pass's one commit.
    """
    budget = api.get_budget(namespace, name)
    if budget is None or (budget["metadata"].get("deletionTimestamp") and not closing):
        return []
    spec = EnergyBudgetSpec.model_validate(budget["spec"])
    if snapshot is None:  # no cache: list what the pass needs
        snapshot = Snapshot(
            api.list_lepton_jobs(namespace),
            api.list_jobs(namespace),
            api.list_pods(namespace, LABEL_JOB_UID),
        )
    lepton_jobs = [
        lj for lj in snapshot.lepton_jobs if (lj.get("spec") or {}).get("budgetName") == name
    ]
    jobs_by_uid = {(j["metadata"].get("labels") or {}).get(LABEL_JOB_UID): j for j in snapshot.jobs}
    pods_by_uid: dict[str, list[dict[str, Any]]] = {}
    for pod in snapshot.pods:
        owner = (pod["metadata"].get("labels") or {}).get(LABEL_JOB_UID)
        if owner:
            pods_by_uid.setdefault(owner, []).append(pod)
    plans: dict[str, JobPlan] = {}
    for lj in lepton_jobs:
        uid = lj["metadata"]["uid"]
        plans[uid] = JobPlan(
            lj=lj,
            observation=tr.observe_job(jobs_by_uid.get(uid)),
            pods=pods_by_uid.get(uid, []),
            deleting=bool(lj["metadata"].get("deletionTimestamp")),
            closing=closing,
        )

    events: list[EventNote] = []
    books = tr.budget_state(budget, now)
    state: BudgetState = roll_over(books, now)
    closed: BudgetState | None = None  # the final books of the period this pass ends
    if budget.get("status") and state.period_start != books.period_start:
        # What running jobs used until the new period began belongs to the old one (the
        # operator may have been down across the end): consume it there, then roll over.
        for reservation in books.reservations:
            plan = plans.get(reservation.job_uid)
            if plan is None or _pod_cache_lags(plan, now):
                continue
            with contextlib.suppress(ValidationError, ValueError):
                plan.estimate = _estimate(plan.lj, memory)
            at_end = measure(
                plan.lj,
                plan.observation,
                plan.estimate,
                config,
                now,
                plan.pods,
                until=state.period_start,
            )
            if at_end is not None:
                books = consume(books, reservation.job_uid, at_end.watt_hours)
        closed = books
        state = roll_over(books, now)
        events.append(
            EventNote(
                _ref(budget, "EnergyBudget"),
                "Normal",
                "PeriodRolledOver",
                f"new period from {format_time(state.period_start)}; the period from "
                f"{format_time(closed.period_start)} closed with "
                f"{closed.consumed_watt_hours:.4f} Wh consumed of "
                f"{closed.limit_watt_hours:.0f} Wh",
            )
        )

    # Accounting: running jobs consume, finished or deleted ones release.
    for reservation in state.reservations:
        plan = plans.get(reservation.job_uid)
        if plan is None:
            state = release(state, reservation.job_uid)
            events.append(
                EventNote(
                    _ref(budget, "EnergyBudget"),
                    "Normal",
                    "ReservationReleased",
                    f"LeptonJob {reservation.job_name!r} is gone; released its reservation",
                )
            )
            continue
        if _pod_cache_lags(plan, now):
            plan.deferred = True  # settled on a later pass, from the pods' final intervals
            continue
        if _pods_still_run_after_deletion(plan, now):
            plan.stopping = True  # its Job is suspended below; settled once its pods stopped
        try:
            plan.estimate = _estimate(plan.lj, memory)
        except (ValidationError, ValueError):
            plan.estimate = None
        status = plan.lj.get("status") or {}
        booked = reservation.baseline_watt_hours + reservation.consumed_watt_hours
        recorded = float(status.get("consumedWattHours") or 0.0)
        if (
            # Its Job seen finished, or gone since (ttlSecondsAfterFinished, a user): only a
            # pass that saw it finish writes a final state.
            (plan.observation.finished or not plan.observation.exists)
            and not plan.deleting
            and status.get("state") in FINAL_STATES
            and recorded >= booked - SETTLE_TOLERANCE_WATT_HOURS
        ):
            # Phase two: the job's final status holds its figure; the budget settles exactly it.
            plan.usage = Usage(recorded, status.get("consumptionSource") == tr.source_label(True))
            state = release(state, reservation.job_uid, recorded)
            plan.released = True
            continue
        plan.usage = measure(plan.lj, plan.observation, plan.estimate, config, now, plan.pods)
        if plan.usage is not None:
            state = consume(state, reservation.job_uid, plan.usage.watt_hours)
        if _meter_lags(plan, now):
            plan.deferred = True  # consumed so far; settled once the meter has the end
            continue
        if plan.deleting and not plan.stopping:
            state = release(state, reservation.job_uid)
            plan.released = True
        elif plan.observation.finished and not plan.deleting:
            # Phase one: the job's final status is written first, with the figure the budget
            # holds for it (never less); the next pass settles that figure. A pass that dies,
            # or loses the job's write, between the two leaves the reservation, so the figure
            # is never recomputed from a later (different) view of its pods or its meter.
            state = hold_only_used(state, reservation.job_uid)
            held = state.reservation(reservation.job_uid)
            total = held.baseline_watt_hours + held.consumed_watt_hours if held else 0.0
            measured = plan.usage.measured if plan.usage else False
            plan.usage = Usage(max(total, recorded), measured)
            plan.finishing = True
        if plan.deleting and plan.released:
            used = plan.usage.watt_hours if plan.usage else 0.0
            events.append(
                EventNote(
                    _ref(budget, "EnergyBudget"),
                    "Normal",
                    "JobDeletedSettled",
                    f"LeptonJob {reservation.job_name!r} is being deleted; settled {used:.4f} Wh "
                    "and released its reservation",
                )
            )

    # Settled jobs are never reconsidered; the set forgets jobs that no longer exist. A job
    # settled by a pass that died before writing the job's final status gets it now.
    state = forget_settled(state, plans)
    for uid, plan in plans.items():
        current = (plan.lj.get("status") or {}).get("state")
        if (
            uid in state.settled_job_uids
            and not plan.released
            and plan.observation.finished
            and current not in FINAL_STATES
        ):
            with contextlib.suppress(ValidationError, ValueError):
                plan.estimate = _estimate(plan.lj, memory)
            plan.usage = measure(plan.lj, plan.observation, plan.estimate, config, now, plan.pods)
            plan.released = True

    # Admission: every job without a reservation that has not ended queues, in order.
    candidates: list[Candidate] = []
    for uid, plan in plans.items():
        if state.reservation(uid) is not None or plan.released or plan.deleting or closing:
            continue
        if uid in state.settled_job_uids or plan.observation.finished:
            continue
        current = (plan.lj.get("status") or {}).get("state")
        if current in FINAL_STATES:
            continue
        if not _selector_allows(spec, plan.lj):
            plan.blocked_reason = "SelectorMismatch"
            plan.blocked_message = (
                f"EnergyBudget {name!r} only admits LeptonJobs labelled "
                f"{spec.job_selector.match_labels if spec.job_selector else {}}; add the labels "
                "or set spec.budgetName to another budget"
            )
            continue
        try:
            plan.estimate = _estimate(plan.lj, memory)
        except (ValidationError, ValueError) as error:
            plan.blocked_reason = "InvalidSpec"
            plan.blocked_message = f"the spec cannot be estimated: {error}"
            continue
        created = parse_time(plan.lj["metadata"].get("creationTimestamp")) or now
        candidates.append(
            Candidate(
                uid,
                plan.lj["metadata"]["name"],
                created,
                plan.estimate.watt_hours,
                plan.estimate.gpu_model,
                float((plan.lj.get("status") or {}).get("consumedWattHours") or 0.0),
            )
        )
    admission = plan_admissions(state, candidates, now, name)
    for waiting in admission.waiting:
        plans[waiting.candidate.job_uid].waiting = waiting
    state = admission.state

    blocked = sum(1 for p in plans.values() if p.blocked_reason)
    status = tr.budget_status(
        state,
        queued_jobs=len(admission.waiting) + blocked,
        when_exhausted=spec.when_exhausted,
        previous=budget.get("status") or {},
        generation=budget["metadata"].get("generation"),
        now=now,
        closed=closed,
    )
    api.replace_budget_status(budget, status)  # the commit point; Conflict aborts the pass
    was_exhausted = any(
        c.get("type") == tr.EXHAUSTED and c.get("status") == "True"
        for c in (budget.get("status") or {}).get("conditions") or []
    )
    deleted = parse_time(budget["metadata"].get("deletionTimestamp"))
    stopping = (
        closing and deleted is not None and (now - deleted).total_seconds() < POD_STOP_SECONDS
    )
    settling = sorted(
        p.lj["metadata"]["name"]
        for uid, p in plans.items()
        if p.deferred
        or p.finishing
        # A suspended job's energy until its pods stop is in the final books too.
        or (stopping and state.reservation(uid) and any(tr.pod_is_running(q) for q in p.pods))
    )
    if closing and not settling:
        events.append(
            EventNote(
                _ref(budget, "EnergyBudget"),
                "Warning",
                "BudgetDeleted",
                f"final books of period {format_time(state.period_start)}: consumed "
                f"{state.consumed_watt_hours:.4f} Wh (settled {state.settled_watt_hours:.4f} Wh) "
                f"of {state.limit_watt_hours:.0f} Wh, held {state.held_watt_hours:.4f} Wh; "
                f"{len(state.reservations)} admitted job(s) suspended",
            )
        )
    if state.exhausted and not was_exhausted:
        events.append(
            EventNote(
                _ref(budget, "EnergyBudget"),
                "Warning",
                "BudgetExhausted",
                f"consumed {state.consumed_watt_hours:.2f} Wh of "
                f"{state.limit_watt_hours:.0f} Wh; whenExhausted={spec.when_exhausted}",
            )
        )

    def act(plan: JobPlan) -> list[EventNote]:
        return _act_on_job(api, config, memory, spec, name, state, plan, now)

    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        for notes in pool.map(act, plans.values()):
            events.extend(notes)
    if closing and settling:
        raise StillSettlingError(events, settling)
    return events


def _placements(
    api: KubeApi, pods: Sequence[Mapping[str, Any]], previous: Mapping[str, Any]
) -> dict[str, Any]:
    """Where the job's pods run (pod → node → GPU model), the GPU model(s) they got, and the
    phases the SDK reported from inside them. Placements of pods that are gone are kept: they
    name the pods whose energy the meter still reports."""
    placed = []
    listed = {p["metadata"]["name"] for p in pods}
    kept = [p for p in previous.get("placements") or [] if p.get("pod") not in listed]
    phases = tr.sum_phases(
        ((p.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_PHASES) for p in pods
    )
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            model = api.node_gpu_model(node) or ""
            placed.append({"pod": pod["metadata"]["name"], "node": node, "gpuModel": model})
    placed.extend(kept)
    found: dict[str, Any] = {"phases": phases} if phases else {}
    if not placed:
        return found
    placed.sort(key=lambda p: p["pod"])
    models = sorted({p["gpuModel"] for p in placed if p["gpuModel"]})
    found["placements"] = placed
    if models:
        found["gpuModel"] = ",".join(models)
    return found


def _power_limit_watts(gpu_model: str, percent: int) -> int:
    profile = get_profile(gpu_model)
    return int(profile.clamp_power_limit(profile.max_power_limit_watts * percent / 100.0))


def _act_on_job(
    api: KubeApi,
    config: OperatorConfig,
    memory: PassMemory,
    spec: EnergyBudgetSpec,
    budget_name: str,
    state: BudgetState,
    plan: JobPlan,
    now: datetime,
) -> list[EventNote]:
    if plan.stopping and plan.observation.exists and not plan.observation.suspended:
        meta = plan.lj["metadata"]
        api.set_job_suspended(meta["namespace"], meta["name"], True)  # its pods stop
    if plan.deleting or plan.deferred:
        return []  # settled above, or on the next pass; the LeptonJob and its Job are going
    lj = plan.lj
    meta = lj["metadata"]
    namespace, job_name, uid = meta["namespace"], meta["name"], meta["uid"]
    current: dict[str, Any] = dict(lj.get("status") or {})
    old_conditions = current.get("conditions") or []
    generation = meta.get("generation")
    ref = _ref(lj, "LeptonJob")
    events: list[EventNote] = []
    written_note: EventNote | None = None  # posted only once the status that says it is written
    observation = plan.observation
    reservation = state.reservation(uid)
    desired: dict[str, Any] = {"observedGeneration": generation, "jobName": job_name}
    intervals = tr.run_intervals(current, plan.pods, now)
    if intervals:
        desired["runIntervals"] = tr.format_intervals(intervals)
    if plan.estimate is not None:
        desired.update(
            gpus=plan.estimate.gpus,
            # The estimate's (most energy-hungry acceptable) model until pods are placed.
            gpuModel=current.get("gpuModel")
            if current.get("placements")
            else plan.estimate.gpu_model,
            estimatedWattHours=round(plan.estimate.watt_hours, 6),
        )

    def cond(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return tr.condition(type_, ok, reason, message, now, old_conditions, generation)

    # A waiting job's suspended Job is created by the LeptonJob's create handler, and an
    # admitted one's below if it is missing: a pass never re-creates one the cache lags on.
    if plan.released or plan.finishing or current.get("state") in FINAL_STATES:
        if current.get("state") in FINAL_STATES and not plan.finishing:
            return []  # phase two settled the figure its final status holds: written already
        usage = plan.usage
        final_state = tr.job_state(observation, admitted=True, evicted=False)
        desired.update(_placements(api, plan.pods, current))
        consumed = usage.watt_hours if usage else 0.0
        source = tr.source_label(usage.measured if usage else False)
        desired.update(
            state=final_state.value,
            completionTime=format_time(observation.completion_time or now),
            consumedWattHours=consumed,
            consumptionSource=source,
            conditions=[
                cond(tr.BUDGET_RESERVED, False, "Released", "the job ended; reservation released"),
                cond(tr.ADMITTED, True, "Admitted", "admitted by the budget"),
                cond(tr.RUNNING, False, "JobEnded", "the Job has ended"),
                cond(
                    tr.FINISHED,
                    True,
                    "Succeeded" if observation.succeeded else "Failed",
                    f"the Job {'completed' if observation.succeeded else 'failed'}; used "
                    f"{consumed:.4f} Wh ({source.lower()})",
                ),
            ],
        )
        if _write_status(api, lj, desired):  # else the next pass writes it, and says so then
            events.append(
                EventNote(
                    ref,
                    "Normal" if observation.succeeded else "Warning",
                    final_state.value,
                    desired["conditions"][-1]["message"],
                )
            )
        return events

    if reservation is not None:
        evict = plan.closing or (
            spec.when_exhausted is WhenExhausted.SUSPEND_RUNNING and state.exhausted
        )
        cap = spec.when_exhausted is WhenExhausted.CAP_POWER and state.exhausted and not evict
        evicted_because = (
            f"EnergyBudget {budget_name!r} is being deleted"
            if plan.closing
            else f"EnergyBudget {budget_name!r} is exhausted"
        )
        if not observation.exists:
            job = build_job(
                lj, scheduler_name=config.scheduler_name, budget_pressure=budget_pressure(state)
            )
            api.create_job(job)
        if evict and not observation.suspended:
            api.set_job_suspended(namespace, job_name, True)
            events.append(
                EventNote(
                    ref,
                    "Warning",
                    "Evicted",
                    f"{evicted_because}; suspended",
                )
            )
        elif not evict and (observation.suspended or not observation.exists):
            api.set_job_suspended(namespace, job_name, False)
            reason = "Resumed" if current.get("state") == "Suspended" else "Admitted"
            events.append(
                EventNote(
                    ref,
                    "Normal",
                    reason,
                    f"reserved {reservation.reserved_watt_hours:.4f} Wh "
                    f"({reservation.gpu_model} estimate) in EnergyBudget "
                    f"{budget_name!r}",
                )
            )
        limit_watts = _power_limit_watts(reservation.gpu_model, spec.capped_power_percent)
        if cap != (current.get("powerLimitWatts") is not None):
            value: Any = str(limit_watts) if cap else None
            for pod in plan.pods:
                api.annotate_pod(
                    namespace, pod["metadata"]["name"], {ANNOTATION_POWER_LIMIT_WATTS: value}
                )
            if cap:
                events.append(
                    EventNote(
                        ref,
                        "Warning",
                        "PowerCapped",
                        f"budget exhausted: GPU power limit {limit_watts} W",
                    )
                )
        running_now = observation.active > 0 and not evict
        if running_now:
            desired.update(_placements(api, plan.pods, current))
        usage = plan.usage
        desired.update(
            state=tr.job_state(observation, True, evict).value,
            admittedTime=current.get("admittedTime")
            or format_time(reservation.admitted_time or now),
            startTime=format_time(observation.start_time),
            # Just admitted (not measured yet): its figure so far, not 0 (an earlier budget's
            # run; the reservation's baseline).
            consumedWattHours=usage.watt_hours
            if usage
            else float(current.get("consumedWattHours") or 0.0),
            consumptionSource=tr.source_label(usage.measured if usage else False),
            powerLimitWatts=limit_watts if cap else None,
            conditions=[
                cond(
                    tr.BUDGET_RESERVED,
                    True,
                    "Reserved",
                    f"reserved {reservation.reserved_watt_hours:.4f} Wh "
                    f"({reservation.gpu_model} estimate) in EnergyBudget {budget_name!r}",
                ),
                cond(tr.ADMITTED, True, "Admitted", "the Job is un-suspended"),
                cond(
                    tr.RUNNING,
                    running_now,
                    "PodsActive" if running_now else "NoActivePods",
                    f"{observation.active} active pod(s)",
                ),
                cond(
                    tr.EVICTED,
                    evict,
                    ("BudgetDeleted" if plan.closing else "BudgetExhausted")
                    if evict
                    else "BudgetAvailable",
                    f"{evicted_because}; the Job is suspended until room appears"
                    if evict
                    else "the budget has room",
                ),
                cond(
                    tr.POWER_CAPPED,
                    cap,
                    "BudgetExhausted" if cap else "NotCapped",
                    f"GPU power limit lowered to {limit_watts} W ({spec.capped_power_percent} %"
                    " of maximum) because the budget is exhausted"
                    if cap
                    else "no cap",
                ),
            ],
        )
    else:
        if observation.exists and not observation.suspended and not observation.finished:
            # A Lepton-managed Job runs only on a reservation; without one it is suspended.
            api.set_job_suspended(namespace, job_name, True)
            events.append(
                EventNote(
                    ref,
                    "Warning",
                    "SuspendedWithoutReservation",
                    f"the Job ran without a reservation in EnergyBudget {budget_name!r}; "
                    "suspended until it is admitted",
                )
            )
        if plan.waiting is not None:
            reason, message = plan.waiting.reason.value, plan.waiting.message
        else:
            reason = plan.blocked_reason or WaitReason.WAITING_FOR_BUDGET.value
            message = plan.blocked_message
        desired.update(
            state=LeptonJobState.WAITING.value,
            conditions=[cond(tr.BUDGET_RESERVED, False, reason, message)],
        )
        old_reason = next(
            (c.get("reason") for c in old_conditions if c.get("type") == tr.BUDGET_RESERVED), None
        )
        if old_reason == reason and current.get("state") == "Waiting":
            last = memory.waiting_written.get(uid, 0.0)
            old_message = next(
                c.get("message") for c in old_conditions if c.get("type") == tr.BUDGET_RESERVED
            )
            if old_message == message or time.monotonic() - last < WAITING_MESSAGE_REFRESH_SECONDS:
                return events
        else:
            written_note = EventNote(ref, "Normal", reason, message)
        memory.waiting_written[uid] = time.monotonic()

    changed = any(current.get(k) != v for k, v in desired.items())
    if changed and _write_status(api, lj, desired) and written_note is not None:
        events.append(written_note)
    return events


def _decided_from(lj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a job's status decision reads from its LeptonJob: identity, spec, labels, whether
    it is being deleted, and the status it had."""
    meta = lj.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("labels") or {},
        meta.get("deletionTimestamp"),
        lj.get("status") or {},
    )


def _write_status(api: KubeApi, lj: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Write a job's status if the LeptonJob is still the one it was decided from; True when
    written. A conflict whose cause changed nothing the decision read (kopf's own finalizer or
    annotation patch, the usual one while a burst is created) is retried at once on the fresh
    resourceVersion; any other lost race is left to the next pass, on fresh state. The budget's
    books are not affected either way (they were committed first)."""
    meta = lj["metadata"]
    try:
        api.patch_lepton_job_status(meta["namespace"], meta["name"], desired, meta)
        return True
    except ConflictError as error:
        fresh = api.get_lepton_job(meta["namespace"], meta["name"])
        if fresh is None or _decided_from(fresh) != _decided_from(lj):
            log.debug("status not written, the next pass will: %s", error)
            return False
    try:
        api.patch_lepton_job_status(meta["namespace"], meta["name"], desired, fresh["metadata"])
    except ConflictError as error:
        log.debug("status not written, the next pass will: %s", error)
        return False
    return True
