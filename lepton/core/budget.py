"""Energy-budget arithmetic: admission, accounting and period rollover, without I/O.

An EnergyBudget holds ``limit`` watt-hours per period. A job is admitted by *reserving* its
estimated energy; while it runs, its measured (or estimated) consumption is *consumed* out of
the reservation; when it ends, it is *released*: what it consumed stays in the period's books
(settled), the rest of its reservation returns to the pool. This is Kueue's quota-reservation
pattern with watt-hours instead of CPU.

Everything here is a pure function of immutable values, so that the operator's decisions can be
tested exhaustively (hypothesis drives every interleaving of reserve, consume, release and
rollover in ``tests/core/test_budget_properties.py``) and so that a restarted operator, reading
the same budget status, makes the same decision. Reservations are keyed by the LeptonJob's UID:
reserving twice is a no-op, which is what makes admission idempotent across crashes.

Invariants (checked by the property tests):
- ``consumed + held <= limit`` after every successful reservation; it can only be exceeded
  when a job consumes more than it reserved (by at most ``overrun``, which status shows) or the
  limit is lowered under admitted jobs (by at most ``over_limit``, which status shows; new jobs
  wait);
- every watt-hour a job reports is counted exactly once, in the period in which it was used;
- ``remaining = max(0, limit - consumed - held)``, where ``held`` is what the reservations
  still hold beyond what their jobs consumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

# Float sums of watt-hours are compared with this tolerance (a micro-watt-hour), so that five
# jobs of exactly a fifth of the limit fit although 5 * 0.2 != 1.0 in binary floating point.
EPSILON_WATT_HOURS = 1e-6


@dataclass(frozen=True)
class Reservation:
    """Watt-hours held for one admitted job in the current period."""

    job_uid: str
    job_name: str
    gpu_model: str
    reserved_watt_hours: float
    consumed_watt_hours: float = 0.0  # used in this period
    baseline_watt_hours: float = 0.0  # the job's lifetime total when this period began
    admitted_time: datetime | None = None

    @property
    def held_watt_hours(self) -> float:
        """What the reservation still holds beyond what the job consumed."""
        return max(0.0, self.reserved_watt_hours - self.consumed_watt_hours)

    @property
    def committed_watt_hours(self) -> float:
        """What the job takes from the budget: its reservation, or more if it overran."""
        return max(self.reserved_watt_hours, self.consumed_watt_hours)


@dataclass(frozen=True)
class BudgetState:
    """The books of one EnergyBudget for its current period."""

    limit_watt_hours: float
    period_seconds: int  # the current period's length, fixed when it began
    period_start: datetime
    settled_watt_hours: float = 0.0  # consumed this period by jobs already released
    reservations: tuple[Reservation, ...] = ()
    # Jobs released (finished, failed, deleted): never reserved again, whatever their status
    # says. Kept across periods; the operator forgets a UID once its LeptonJob is gone.
    settled_job_uids: frozenset[str] = frozenset()
    # What released jobs consumed this period beyond their reservations (meter-reported overrun).
    settled_overrun_watt_hours: float = 0.0
    # The length of the periods after this one (spec.periodSeconds, maybe edited since this
    # period began); None: the current length. An edit never moves the current period's end:
    # its books may already hold energy used after an earlier end.
    next_period_seconds: int | None = None

    @property
    def consumed_watt_hours(self) -> float:
        """Consumed in this period, by finished and running jobs."""
        return self.settled_watt_hours + sum(r.consumed_watt_hours for r in self.reservations)

    @property
    def overrun_watt_hours(self) -> float:
        """Consumed this period beyond what the jobs reserved: the only way the books exceed
        the limit (besides a lowered limit), shown in the budget's status."""
        return self.settled_overrun_watt_hours + sum(
            max(0.0, r.consumed_watt_hours - r.reserved_watt_hours) for r in self.reservations
        )

    @property
    def held_watt_hours(self) -> float:
        """Held for admitted jobs beyond what they consumed (the sum of their
        ``Reservation.held_watt_hours``; status shows it as ``reservedWattHours``)."""
        return sum(r.held_watt_hours for r in self.reservations)

    @property
    def committed_watt_hours(self) -> float:
        """Consumed plus held: what new jobs cannot have."""
        return self.consumed_watt_hours + self.held_watt_hours

    @property
    def remaining_watt_hours(self) -> float:
        """What a new job could still reserve."""
        return max(0.0, self.limit_watt_hours - self.committed_watt_hours)

    @property
    def over_limit_watt_hours(self) -> float:
        """What admitted jobs hold beyond a limit lowered under them (besides the overrun): they
        keep their reservations, new jobs wait until it is gone. Shown in the budget's status."""
        excess = self.committed_watt_hours - self.limit_watt_hours - self.overrun_watt_hours
        return excess if excess > EPSILON_WATT_HOURS else 0.0

    @property
    def exhausted(self) -> bool:
        """The period's consumption has reached the limit."""
        return self.consumed_watt_hours >= self.limit_watt_hours - EPSILON_WATT_HOURS

    @property
    def period_end(self) -> datetime:
        """When the current period ends and the next begins."""
        return self.period_start + timedelta(seconds=self.period_seconds)

    def reservation(self, job_uid: str) -> Reservation | None:
        """The reservation of one job, if it has one."""
        for r in self.reservations:
            if r.job_uid == job_uid:
                return r
        return None

    def fits(self, watt_hours: float) -> bool:
        """Whether a new reservation of ``watt_hours`` fits in what remains."""
        return self.committed_watt_hours + watt_hours <= self.limit_watt_hours + EPSILON_WATT_HOURS


def reserve(
    state: BudgetState,
    job_uid: str,
    job_name: str,
    gpu_model: str,
    watt_hours: float,
    now: datetime | None = None,
    used_watt_hours: float = 0.0,
) -> tuple[BudgetState, bool]:
    """Reserve ``watt_hours`` for a job; (new state, whether the job holds a reservation).

    ``used_watt_hours``: the job's lifetime figure when it is admitted (a job suspended when
    its budget was deleted, admitted again by a recreated one): its baseline, so that only
    what it uses from now on is charged here, not again what another period or budget booked.

    Reserving a job that already holds a reservation changes nothing and succeeds: this is what
    makes admission idempotent when a restarted operator replays it. A settled job (released
    once) is never reserved again: its energy is in the books already.
    """
    if watt_hours < 0 or math.isnan(watt_hours):
        raise ValueError(f"a reservation must be a non-negative number of watt-hours: {watt_hours}")
    if state.reservation(job_uid) is not None:
        return state, True
    if job_uid in state.settled_job_uids:
        return state, False
    if not state.fits(watt_hours):
        return state, False
    new = Reservation(
        job_uid=job_uid,
        job_name=job_name,
        gpu_model=gpu_model,
        reserved_watt_hours=watt_hours,
        baseline_watt_hours=used_watt_hours,
        admitted_time=now,
    )
    return replace(state, reservations=(*state.reservations, new)), True


def consume(state: BudgetState, job_uid: str, job_total_watt_hours: float) -> BudgetState:
    """Record that a job has used ``job_total_watt_hours`` since it started (a counter).

    The figure is a lifetime total, not an increment, so that replaying it is harmless; a total
    that went backwards (a lost scrape, a restarted exporter) never un-consumes energy.
    Unknown jobs are ignored: they were released already.
    """
    updated = []
    for r in state.reservations:
        if r.job_uid == job_uid:
            in_period = max(r.consumed_watt_hours, job_total_watt_hours - r.baseline_watt_hours)
            r = replace(r, consumed_watt_hours=in_period)
        updated.append(r)
    return replace(state, reservations=tuple(updated))


def hold_only_used(state: BudgetState, job_uid: str) -> BudgetState:
    """A job ended but is not settled yet: it holds only what it used, so the rest of its
    reservation is room for the next job at once."""
    return replace(
        state,
        reservations=tuple(
            replace(r, reserved_watt_hours=min(r.reserved_watt_hours, r.consumed_watt_hours))
            if r.job_uid == job_uid
            else r
            for r in state.reservations
        ),
    )


def release(state: BudgetState, job_uid: str, total_watt_hours: float | None = None) -> BudgetState:
    """A job ended (or was deleted): keep what it consumed, return the rest of its reservation.

    ``total_watt_hours``: the job's lifetime figure as its own final status records it (rounded
    there); the period keeps that figure less what earlier periods counted, exactly.
    """
    gone = state.reservation(job_uid)
    if gone is None:
        return state
    used = gone.consumed_watt_hours
    if total_watt_hours is not None:
        used = max(0.0, total_watt_hours - gone.baseline_watt_hours)
    return replace(
        state,
        settled_watt_hours=state.settled_watt_hours + used,
        settled_overrun_watt_hours=state.settled_overrun_watt_hours
        + max(0.0, used - gone.reserved_watt_hours),
        reservations=tuple(r for r in state.reservations if r.job_uid != job_uid),
        settled_job_uids=state.settled_job_uids | {job_uid},
    )


def forget_settled(state: BudgetState, existing_job_uids: Iterable[str]) -> BudgetState:
    """Keep only the settled UIDs of jobs that still exist: the set stays as small as the
    namespace's LeptonJobs (a deleted job's UID never comes back)."""
    kept = state.settled_job_uids & frozenset(existing_job_uids)
    return state if kept == state.settled_job_uids else replace(state, settled_job_uids=kept)


def roll_over(state: BudgetState, now: datetime) -> BudgetState:
    """Start the period that contains ``now``; returns ``state`` when it is still current.

    Periods are aligned on the current period's end, so a stopped operator that comes back
    late skips the periods it missed rather than shifting the schedule; the periods after the
    current one are ``next_period_seconds`` long. Running jobs carry the unused part of their
    reservation into the new period; what they consumed before stays in the old one (their
    baseline moves up by it).
    """
    if now < state.period_end:
        return state
    length = state.next_period_seconds or state.period_seconds
    skipped = int((now - state.period_end).total_seconds() // length)
    carried = tuple(
        replace(
            r,
            reserved_watt_hours=r.held_watt_hours,
            baseline_watt_hours=r.baseline_watt_hours + r.consumed_watt_hours,
            consumed_watt_hours=0.0,
        )
        for r in state.reservations
    )
    return replace(
        state,
        period_start=state.period_end + timedelta(seconds=skipped * length),
        period_seconds=length,
        settled_watt_hours=0.0,
        settled_overrun_watt_hours=0.0,
        reservations=carried,
    )


# --------------------------------------------------------------------------- admission queue


class WaitReason(StrEnum):
    """Why a job holds no reservation yet (the reason of its BudgetReserved=False condition)."""

    WAITING_FOR_BUDGET = "WaitingForBudget"
    EXCEEDS_BUDGET = "ExceedsBudget"


@dataclass(frozen=True)
class Candidate:
    """A job asking for admission, with its estimate."""

    job_uid: str
    job_name: str
    creation_time: datetime
    watt_hours: float
    gpu_model: str
    used_watt_hours: float = 0.0  # its lifetime figure so far (it ran under a deleted budget)

    @property
    def queue_key(self) -> tuple[datetime, str]:
        """Admission order: oldest first, then by name (Kueue's StrictFIFO)."""
        return (self.creation_time, self.job_name)


@dataclass(frozen=True)
class Waiting:
    """A job that stays in the queue, and why, in words with the numbers."""

    candidate: Candidate
    reason: WaitReason
    message: str
    position: int  # 1 = next in line


@dataclass(frozen=True)
class AdmissionPlan:
    """The outcome of one admission pass over a budget's queue."""

    state: BudgetState
    admitted: tuple[Candidate, ...] = ()
    waiting: tuple[Waiting, ...] = field(default_factory=tuple)


def _wh(value: float) -> str:
    return f"{value:.2f} Wh"


def wait_message(state: BudgetState, candidate: Candidate, budget_name: str) -> str:
    """Why a job waits, with the numbers and what would let it in."""
    return (
        f"needs {_wh(candidate.watt_hours)} (estimate for {candidate.gpu_model}) but "
        f"EnergyBudget {budget_name!r} has {_wh(state.remaining_watt_hours)} of "
        f"{_wh(state.limit_watt_hours)} left (consumed {_wh(state.consumed_watt_hours)}, "
        f"held {_wh(state.held_watt_hours)}); it will be admitted when a job ends, "
        f"the next period starts at {state.period_end.isoformat()} or spec.limitWattHours "
        "is raised"
    )


def exceeds_message(state: BudgetState, candidate: Candidate, budget_name: str) -> str:
    """Why a job can never be admitted under the current limit."""
    return (
        f"needs {_wh(candidate.watt_hours)} (estimate for {candidate.gpu_model}), more than "
        f"EnergyBudget {budget_name!r}'s whole limit of {_wh(state.limit_watt_hours)} per period; "
        "raise spec.limitWattHours, reduce spec.work, or allow a more efficient spec.gpuModels"
    )


def plan_admissions(
    state: BudgetState, candidates: Iterable[Candidate], now: datetime, budget_name: str
) -> AdmissionPlan:
    """Admit the queue in order while it fits; the first job that does not fit blocks the rest.

    Strict FIFO keeps a large job from starving behind a stream of small ones. A job larger
    than the whole limit can never fit: it is marked ``ExceedsBudget`` and does not block.
    Jobs that already hold a reservation are skipped (admission is idempotent), and so are
    settled ones (a finished job is never admitted again).
    """
    admitted: list[Candidate] = []
    waiting: list[Waiting] = []
    blocked = False
    for candidate in sorted(candidates, key=lambda c: c.queue_key):
        if state.reservation(candidate.job_uid) is not None:
            continue
        if candidate.job_uid in state.settled_job_uids:
            continue
        if candidate.watt_hours > state.limit_watt_hours + EPSILON_WATT_HOURS:
            message = exceeds_message(state, candidate, budget_name)
            waiting.append(Waiting(candidate, WaitReason.EXCEEDS_BUDGET, message, 0))
            continue
        if not blocked:
            state, ok = reserve(
                state,
                candidate.job_uid,
                candidate.job_name,
                candidate.gpu_model,
                candidate.watt_hours,
                now,
                candidate.used_watt_hours,
            )
            if ok:
                admitted.append(candidate)
                continue
            blocked = True
        position = 1 + sum(1 for w in waiting if w.reason is WaitReason.WAITING_FOR_BUDGET)
        message = wait_message(state, candidate, budget_name)
        if position > 1:
            message = f"#{position} in line; " + message
        waiting.append(Waiting(candidate, WaitReason.WAITING_FOR_BUDGET, message, position))
    return AdmissionPlan(state=state, admitted=tuple(admitted), waiting=tuple(waiting))


def release_all(state: BudgetState, job_uids: Sequence[str]) -> BudgetState:
    """Release several jobs at once."""
    for uid in job_uids:
        state = release(state, uid)
    return state


def budget_pressure(state: BudgetState) -> float:
    """0.0 (nothing committed) .. 1.0 (all committed): the hint the scheduler weighs."""
    if state.limit_watt_hours <= 0:
        return 1.0
    return min(1.0, max(0.0, state.committed_watt_hours / state.limit_watt_hours))
