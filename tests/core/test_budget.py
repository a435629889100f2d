"""Budget arithmetic: admission in order, accounting and rollover, example by example."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lepton.core.budget import (
    BudgetState,
    Candidate,
    WaitReason,
    budget_pressure,
    consume,
    plan_admissions,
    release,
    reserve,
    roll_over,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def budget(limit: float = 100.0, period_seconds: int = 3600) -> BudgetState:
    return BudgetState(limit_watt_hours=limit, period_seconds=period_seconds, period_start=T0)


def job(name: str, watt_hours: float, offset_seconds: int = 0) -> Candidate:
    return Candidate(
        job_uid=f"uid-{name}",
        job_name=name,
        creation_time=T0 + timedelta(seconds=offset_seconds),
        watt_hours=watt_hours,
        gpu_model="A100",
    )


def test_exactly_five_of_twenty_equal_jobs_fit_a_budget_of_five() -> None:
    jobs = [job(f"j{i:02d}", 0.2, i) for i in range(20)]
    plan = plan_admissions(budget(limit=1.0), jobs, T0, "team-a")
    assert [c.job_name for c in plan.admitted] == [f"j{i:02d}" for i in range(5)]
    assert len(plan.waiting) == 15
    assert plan.state.remaining_watt_hours == pytest.approx(0.0, abs=1e-9)


def test_job_waits_when_budget_is_exhausted_with_the_numbers_in_its_message() -> None:
    state, ok = reserve(budget(limit=100.0), "uid-a", "a", "A40", 80.0)
    assert ok
    plan = plan_admissions(state, [job("b", 30.0)], T0, "team-a")
    assert plan.admitted == ()
    (waiting,) = plan.waiting
    assert waiting.reason is WaitReason.WAITING_FOR_BUDGET
    assert "needs 30.00 Wh" in waiting.message
    assert "20.00 Wh of 100.00 Wh left" in waiting.message
    assert "team-a" in waiting.message


def test_queue_is_strict_fifo_a_big_job_blocks_later_small_ones() -> None:
    plan = plan_admissions(
        budget(limit=100.0),
        [job("big", 90.0, 1), job("first", 20.0, 0), job("small", 5.0, 2)],
        T0,
        "b",
    )
    assert [c.job_name for c in plan.admitted] == ["first"]
    assert [(w.candidate.job_name, w.position) for w in plan.waiting] == [("big", 1), ("small", 2)]


def test_job_larger_than_the_whole_limit_exceeds_budget_and_does_not_block() -> None:
    plan = plan_admissions(
        budget(limit=100.0), [job("huge", 500.0, 0), job("ok", 10.0, 1)], T0, "b"
    )
    assert [c.job_name for c in plan.admitted] == ["ok"]
    assert plan.waiting[0].reason is WaitReason.EXCEEDS_BUDGET
    assert "raise spec.limitWattHours" in plan.waiting[0].message


def test_reserving_the_same_job_twice_counts_it_once() -> None:
    state, _ = reserve(budget(), "uid-a", "a", "A40", 40.0)
    again, ok = reserve(state, "uid-a", "a", "A40", 40.0)
    assert ok and again == state
    assert plan_admissions(again, [job("a", 40.0)], T0, "b").admitted == ()


def test_release_keeps_consumption_and_frees_the_rest_of_the_reservation() -> None:
    state, _ = reserve(budget(), "uid-a", "a", "A40", 40.0)
    state = consume(state, "uid-a", 15.0)
    assert state.consumed_watt_hours == 15.0 and state.held_watt_hours == 25.0
    state = release(state, "uid-a")
    assert state.consumed_watt_hours == 15.0
    assert state.held_watt_hours == 0.0
    assert state.remaining_watt_hours == 85.0


def test_a_counter_going_backwards_never_unconsumes() -> None:
    state, _ = reserve(budget(), "uid-a", "a", "A40", 40.0)
    state = consume(consume(state, "uid-a", 15.0), "uid-a", 3.0)
    assert state.consumed_watt_hours == 15.0


def test_rollover_resets_consumption_and_carries_running_reservations() -> None:
    state, _ = reserve(budget(limit=100.0, period_seconds=3600), "uid-a", "a", "A40", 40.0)
    state = consume(state, "uid-a", 30.0)
    state = release(reserve(state, "uid-b", "b", "A40", 20.0)[0], "uid-b")
    assert roll_over(state, T0 + timedelta(seconds=3599)) is state
    rolled = roll_over(state, T0 + timedelta(seconds=3 * 3600 + 5))
    assert rolled.period_start == T0 + timedelta(seconds=3 * 3600)
    assert rolled.consumed_watt_hours == 0.0
    assert rolled.held_watt_hours == 10.0  # 40 reserved - 30 used before the rollover
    rolled = consume(rolled, "uid-a", 34.0)  # lifetime total: 4 Wh in the new period
    assert rolled.consumed_watt_hours == pytest.approx(4.0)


def test_raising_the_limit_admits_the_waiting_job() -> None:
    state, _ = reserve(budget(limit=100.0), "uid-a", "a", "A40", 80.0)
    assert plan_admissions(state, [job("b", 30.0)], T0, "b").admitted == ()
    raised = BudgetState(
        limit_watt_hours=200.0,
        period_seconds=state.period_seconds,
        period_start=state.period_start,
        reservations=state.reservations,
    )
    assert [c.job_name for c in plan_admissions(raised, [job("b", 30.0)], T0, "b").admitted] == [
        "b"
    ]


def test_budget_pressure_is_the_committed_fraction() -> None:
    state, _ = reserve(budget(limit=100.0), "uid-a", "a", "A40", 25.0)
    assert budget_pressure(state) == pytest.approx(0.25)


def test_negative_reservation_is_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="-1"):
        reserve(budget(), "uid-a", "a", "A40", -1.0)
