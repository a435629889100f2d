"""The books under any mix of create, edit, delete, start, finish, crash, restart and rollover.

Hypothesis drives the operator's real admission pass (against the in-memory API of
test_operator_admission, which keeps resourceVersions and can crash at any call) beside a
model of the world: what each job's pods really ran. Jobs stop before their estimated run time,
so no job overruns its reservation and the limit is a hard bound. Invariants:

- used plus reserved never exceeds the limit in force after a pass that admits, nor ever unless
  an edit lowered the limit under running jobs;
- each closed period's books hold what the pods ran in it, up to its end;
- every job's energy is counted exactly once: the periods' books add up to what the jobs ran;
- nothing admitted is lost: every reservation is a live job's, every running Job holds one, and
  every live unfinished job is admitted or waiting.
"""

from __future__ import annotations

import contextlib
import math
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lepton_operator.admission import OperatorConfig, PassMemory, reconcile_budget
from lepton_operator.translate import parse_time
from test_operator_admission import NS, T0, FakeApi, SimulatedCrashError

from lepton.api.jobspec import estimate_energy
from lepton.api.v1alpha1 import LeptonJobSpec
from lepton.core.budget import EPSILON_WATT_HOURS

SPEC = {"budgetName": "team", "gpuModels": ["A40"], "work": {"referenceGpuSeconds": 3600}}
ESTIMATE = estimate_energy(LeptonJobSpec.model_validate({**SPEC, "template": {}}))
PER_SECOND = ESTIMATE.watt_hours / ESTIMATE.duration_seconds
# A pod stops before 90 % of the estimated run time: no overrun, so the limit is hard.
MAX_RUN = int(ESTIMATE.duration_seconds * 0.9)
PERIOD = 900  # short, so that most runs cross several rollovers with jobs running
LIMIT = math.ceil(ESTIMATE.watt_hours * 2.5)

job_index = st.integers(0, 11)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.just(0)),
        st.tuples(st.just("finish"), job_index),
        st.tuples(st.just("delete"), st.tuples(job_index, st.integers(0, 300))),
        st.tuples(st.just("pass"), st.just(0)),
        st.tuples(st.just("crash"), st.integers(1, 8)),
        st.tuples(st.just("advance"), st.integers(1, 900)),
        st.tuples(st.just("edit"), st.sampled_from([0.5, 1.0, 2.0])),
    ),
    max_size=50,
)


class World:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.api.add_budget("team", LIMIT, periodSeconds=PERIOD)
        self.now = T0
        self.memory = PassMemory()
        self.created: list[str] = []
        self.started: dict[str, datetime] = {}
        self.ran: dict[str, float] = {}  # seconds each job's pod ran, once it stopped
        self.closed_periods = 0.0
        self.period_start: str | None = None
        self.last_consumed = 0.0
        self.held_before: set[str] = set()
        self.lowered = False  # an edit lowered the limit

    def run_pass(self) -> None:
        reconcile_budget(self.api, OperatorConfig(workers=2), self.memory, NS, "team", self.now)  # type: ignore[arg-type]
        self.check()
        # The Job controller and the kubelet: an un-suspended Job's pod starts at once.
        for name, job in self.api.jobs.items():
            if name not in self.started and job["spec"].get("suspend") is False:
                self.api.run_pod(name, f"{name}-p0", self.now)
                job["status"] = {"startTime": self.now.strftime("%Y-%m-%dT%H:%M:%SZ")}
                self.started[name] = self.now

    def check(self) -> None:
        status = self.api.budgets["team"].get("status") or {}
        if not status:
            return
        if self.period_start is not None and status["periodStartTime"] != self.period_start:
            # The closed period's final books: what the pods ran in it, up to its end (not to
            # the last pass before it, and none of it charged to the new period).
            assert status["previousPeriodStartTime"] == self.period_start
            closed = status["previousPeriodConsumedWattHours"]
            ran_in_it = self.ran_between(self.period_start, status["periodStartTime"])
            assert closed == pytest.approx(ran_in_it, rel=1e-6, abs=1e-6), "wrong period"
            self.closed_periods += closed
        self.period_start = status["periodStartTime"]
        self.last_consumed = status["consumedWattHours"]
        used_and_held = status["consumedWattHours"] + status["reservedWattHours"]
        limit = self.api.budgets["team"]["spec"]["limitWattHours"]
        uids = [r["jobUid"] for r in status["reservations"]]
        admitted_now = set(uids) - self.held_before
        self.held_before = set(uids)
        # Within the limit in force: always, unless an edit lowered it under running jobs
        # (then they keep their reservations), and after every pass that admitted a job.
        if admitted_now or not self.lowered:
            assert used_and_held <= limit + EPSILON_WATT_HOURS, (status, limit)
        assert len(uids) == len(set(uids)), "a job holds two reservations"

    def ran_between(self, start: str, end: str) -> float:
        """Watt-hours the pods ran between two of the budget's period starts."""
        since, until = parse_time(start), parse_time(end)
        assert since is not None and until is not None
        seconds = 0.0
        for name, started in self.started.items():
            stopped = started + timedelta(seconds=self.ran[name]) if name in self.ran else self.now
            seconds += max(0.0, (min(stopped, until) - max(started, since)).total_seconds())
        return seconds * PER_SECOND

    def stop_pod(self, name: str, at: datetime) -> None:
        self.api.finish(name, self.started[name], at)
        self.ran[name] = (at - self.started[name]).total_seconds()

    def advance(self, seconds: int) -> None:
        target = self.now + timedelta(seconds=seconds)
        for name, started in list(self.started.items()):
            if name not in self.ran and target - started > timedelta(seconds=MAX_RUN):
                self.stop_pod(name, started + timedelta(seconds=MAX_RUN))
        self.now = target

    def apply(self, kind: str, arg: Any) -> None:
        """One event; only 'pass', 'advance', 'crash' and 'delete' run the operator, so that a
        crash can hit the pass that settles a job that just finished."""
        api = self.api
        value, later = arg if isinstance(arg, tuple) else (arg, 0)
        names = [n for n in self.created if n in api.lepton_jobs]
        name = names[int(value) % len(names)] if names else None
        if kind == "create":
            name = f"j{len(self.created):02d}"
            self.created.append(name)
            offset = int((self.now - T0).total_seconds())
            api.add_job(name, offset=offset)
        elif kind == "finish" and name and name in self.started and name not in self.ran:
            self.stop_pod(name, self.now)
        elif kind == "delete" and name:
            self.advance(later)  # deleted some time after the last pass
            meta = api.lepton_jobs[name]["metadata"]
            meta["deletionTimestamp"] = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
            self.run_pass()  # kopf's finalizer: a pass settles it before it goes
            if name in self.started and name not in self.ran:
                self.ran[name] = (self.now - self.started[name]).total_seconds()
            del api.lepton_jobs[name]
            api.jobs.pop(name, None)
            api.pods.pop(f"{name}-p0", None)
        elif kind == "crash":
            api.calls, api.crash_after_calls = 0, value
            with contextlib.suppress(SimulatedCrashError):
                self.run_pass()
            api.crash_after_calls = None
            self.check()  # what the dying pass committed (its budget write is atomic)
            self.memory = PassMemory()  # the operator restarts, remembering nothing
        elif kind == "advance":
            self.advance(value)
            self.run_pass()
        elif kind == "pass":
            self.run_pass()
        elif kind == "edit":  # the limit edited mid-period; the next pass reads it
            budget = api.budgets["team"]
            new = math.ceil(LIMIT * value)
            self.lowered |= new < budget["spec"]["limitWattHours"]
            budget["spec"]["limitWattHours"] = new
            budget["metadata"]["generation"] += 1
            budget["metadata"]["resourceVersion"] = str(next(api.versions))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_the_books_hold_under_any_mix_of_events(ops: list[tuple[str, Any]]) -> None:
    world = World()
    for _ in range(3):
        world.apply("create", 0)
    world.run_pass()
    for kind, value in ops:
        world.apply(kind, value)
    # Settle: every pod stops, then clean passes (which may admit and start the next jobs,
    # which stop in turn) until nothing runs.
    for _ in range(20):
        for name in list(world.started):
            if name not in world.ran:
                world.stop_pod(name, world.now)
        world.now += timedelta(seconds=1)
        world.run_pass()
        if all(name in world.ran for name in world.started):
            break
    for _ in range(2):
        world.now += timedelta(seconds=1)
        world.run_pass()
    api = world.api
    status = api.budgets["team"]["status"]

    # Every job's energy exactly once, across the periods.
    ran = sum(world.ran.values()) * PER_SECOND
    booked = world.closed_periods + status["consumedWattHours"]
    assert booked == pytest.approx(ran, rel=1e-6, abs=1e-6)

    # Nothing admitted is lost.
    live = {lj["metadata"]["uid"]: name for name, lj in api.lepton_jobs.items()}
    held = {r["jobUid"] for r in status["reservations"]}
    assert held <= set(live), "a reservation outlived its job"
    for uid, name in live.items():
        state: Any = api.state(name)
        job = api.jobs.get(name)
        finished = name in world.ran
        if finished:
            assert state == "Finished" and uid not in held
        else:
            assert state in ("Admitted", "Running", "Waiting"), (name, state)
            assert (uid in held) == (state != "Waiting")
        if job is not None and job["spec"].get("suspend") is False and not finished:
            assert uid in held, f"{name}'s Job runs without a reservation"
