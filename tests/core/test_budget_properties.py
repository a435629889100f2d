"""Property tests: under any interleaving of reserve, consume, release and rollover the books hold.

A small model of the world runs beside the pure budget functions: jobs report lifetime energy
totals that only grow; the model tracks every watt-hour it reported, and the budget must count
each one exactly once, in the period in which it was used.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton.core.budget import (
    EPSILON_WATT_HOURS,
    BudgetState,
    Candidate,
    consume,
    hold_only_used,
    plan_admissions,
    release,
    reserve,
    roll_over,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
JOBS = [f"j{i}" for i in range(8)]

reserve_op = st.tuples(st.just("reserve"), st.sampled_from(JOBS), st.floats(0, 60))
consume_op = st.tuples(st.just("consume"), st.sampled_from(JOBS), st.floats(0, 40))
release_op = st.tuples(st.just("release"), st.sampled_from(JOBS), st.just(0.0))
# The operator's two-phase settlement: a job ends (it holds only what it used, its final
# status records its lifetime figure, rounded), a later pass settles exactly that figure.
end_op = st.tuples(st.just("end"), st.sampled_from(JOBS), st.just(0.0))
settle_op = st.tuples(st.just("settle"), st.sampled_from(JOBS), st.just(0.0))
time_op = st.tuples(st.just("advance"), st.just(""), st.floats(0, 5000))
limit_op = st.tuples(st.just("limit"), st.just(""), st.floats(1, 300))
# spec.periodSeconds edited: the periods after the current one have the new length.
period_op = st.tuples(
    st.just("period"), st.just(""), st.sampled_from([60.0, 900.0, 3600.0, 7200.0])
)
admit_op = st.tuples(
    st.just("admit"), st.just(""), st.lists(st.tuples(st.sampled_from(JOBS), st.floats(0, 60)))
)
ops = st.lists(
    st.one_of(
        reserve_op,
        consume_op,
        release_op,
        end_op,
        settle_op,
        time_op,
        limit_op,
        admit_op,
        period_op,
    ),
    max_size=40,
)


def check_books(state: BudgetState) -> None:
    assert state.held_watt_hours >= 0
    assert state.consumed_watt_hours >= 0
    assert state.remaining_watt_hours >= 0
    expected_remaining = max(0.0, state.limit_watt_hours - state.committed_watt_hours)
    assert abs(state.remaining_watt_hours - expected_remaining) < EPSILON_WATT_HOURS
    uids = [r.job_uid for r in state.reservations]
    assert len(uids) == len(set(uids)), "a job holds two reservations"


@settings(max_examples=120, deadline=None)
@given(ops, st.floats(1, 300))
def test_budget_invariants_hold_under_any_interleaving(
    operations: list[tuple[str, str, object]], limit: float
) -> None:
    state = BudgetState(limit_watt_hours=limit, period_seconds=3600, period_start=T0)
    now = T0
    lifetime: dict[str, float] = {}  # what each job reported as its lifetime total
    running: set[str] = set()
    finished: set[str] = set()
    recorded: dict[str, float] = {}  # ended jobs' final figures, not settled yet
    accounted_in_closed_periods = 0.0
    # Jobs that overran their reservation or held one when the limit was lowered, and whether
    # such a thing happened in this period: only then may consumed + reserved exceed the limit.
    tainted: set[str] = set()
    period_tainted = False
    limit_lowered = False  # in this period: then even the overrun does not bound the excess
    lowered_holders: set[str] = set()  # jobs admitted under a limit since lowered
    settles = 0  # each settles a figure rounded to a microwatt-hour

    for kind, uid, value in operations:
        before = state
        if kind == "reserve":
            assert isinstance(value, float)
            fits = state.fits(value)
            state, ok = reserve(state, uid, uid, "A40", value, now)
            assert ok == (uid in running or (fits and uid not in finished))
            if ok:
                running.add(uid)
        elif kind == "admit":
            assert isinstance(value, list)
            candidates = [
                # Finished jobs ask again too (a crash lost their status): never re-admitted.
                Candidate(u, u, T0, wh, "A40")
                for u, wh in dict(value).items()
            ]
            plan = plan_admissions(state, candidates, now, "b")
            for c in plan.admitted:
                assert c.job_uid not in running, "admitted a job twice"
                assert c.job_uid not in finished, "re-admitted a finished job"
                running.add(c.job_uid)
            state = plan.state
        elif kind == "consume" and uid in running and uid not in recorded:
            assert isinstance(value, float)
            lifetime[uid] = lifetime.get(uid, 0.0) + value
            state = consume(state, uid, lifetime[uid])
            held = state.reservation(uid)
            assert held is not None
            if held.consumed_watt_hours > held.reserved_watt_hours + EPSILON_WATT_HOURS:
                tainted.add(uid)
                period_tainted = True
            assert state.consumed_watt_hours >= before.consumed_watt_hours - EPSILON_WATT_HOURS
        elif kind == "end" and uid in running and uid not in recorded:
            state = hold_only_used(state, uid)
            held = state.reservation(uid)
            assert held is not None
            assert held.reserved_watt_hours <= before.reservation(uid).reserved_watt_hours  # type: ignore[union-attr]
            assert state.consumed_watt_hours == before.consumed_watt_hours
            assert state.overrun_watt_hours == pytest.approx(before.overrun_watt_hours)
            recorded[uid] = round(held.baseline_watt_hours + held.consumed_watt_hours, 6)
        elif kind in ("release", "settle") and uid in running:
            if kind == "settle" and uid in recorded:
                state = release(state, uid, recorded.pop(uid))
                settles += 1
            else:
                recorded.pop(uid, None)
                state = release(state, uid)
            running.discard(uid)
            tainted.discard(uid)
            lowered_holders.discard(uid)
            finished.add(uid)
            assert abs(state.consumed_watt_hours - before.consumed_watt_hours) < 1e-6 * (
                1 + settles
            )
        elif kind == "advance":
            assert isinstance(value, float)
            now = now + timedelta(seconds=value)
            state = roll_over(state, now)
            if state.period_start != before.period_start:
                accounted_in_closed_periods += before.consumed_watt_hours
                limit_lowered = False
                assert state.consumed_watt_hours == 0.0
                assert state.period_start <= now < state.period_end
                # The closed period ended where it was due when it began, never earlier (its
                # books hold what was used up to then); the new one has the edited length.
                assert state.period_start >= before.period_end
                assert state.period_seconds == (before.next_period_seconds or before.period_seconds)
                period_tainted = False  # a new period starts from clean books
        elif kind == "period":
            assert isinstance(value, float)
            state = replace(state, next_period_seconds=int(value))
            assert state.period_end == before.period_end, "an edit moved the current period's end"
        elif kind == "limit":
            assert isinstance(value, float)
            if value < state.limit_watt_hours:
                tainted |= running
                period_tainted = True
                limit_lowered = True
                lowered_holders |= running
            state = replace(state, limit_watt_hours=value)

        check_books(state)
        assert {r.job_uid for r in state.reservations} == running
        if not tainted and not period_tainted:
            assert state.committed_watt_hours <= state.limit_watt_hours + EPSILON_WATT_HOURS
        # Beyond the limit only by what the books show: the overrun, and what admitted jobs
        # hold beyond a limit lowered under them (none unless it was lowered).
        excess = state.committed_watt_hours - state.limit_watt_hours
        assert excess <= state.overrun_watt_hours + state.over_limit_watt_hours + EPSILON_WATT_HOURS
        if not limit_lowered and not lowered_holders:
            assert excess <= state.overrun_watt_hours + EPSILON_WATT_HOURS
            assert state.over_limit_watt_hours == 0.0

    # Every watt-hour reported was accounted exactly once across the periods.
    total_reported = sum(lifetime.values())
    total_accounted = accounted_in_closed_periods + state.consumed_watt_hours
    assert abs(total_reported - total_accounted) < 1e-6 * max(1.0, total_reported) * (1 + settles)
