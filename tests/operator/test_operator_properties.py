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
import copy
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lepton_operator.admission import (
    OperatorConfig,
    PassMemory,
    StillSettlingError,
    reconcile_budget,
)
from lepton_operator.kube import ConflictError
from lepton_operator.prometheus import JobEnergy
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
        st.tuples(st.just("stale"), job_index),
        st.tuples(st.just("overrun"), job_index),
        st.tuples(st.just("gone"), job_index),
        st.tuples(st.just("delete"), st.tuples(job_index, st.integers(0, 300))),
        st.tuples(st.just("pass"), st.just(0)),
        st.tuples(st.just("conflict"), st.just(0)),
        st.tuples(st.just("crash"), st.integers(1, 8)),
        st.tuples(st.just("advance"), st.integers(1, 900)),
        st.tuples(st.just("edit"), st.sampled_from([0.5, 1.0, 2.0])),
        st.tuples(st.just("rebudget"), st.just(0)),
    ),
    max_size=50,
)


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


SCRAPE_LAG_SECONDS = 3  # Prometheus' newest sample of a pod is this old


class TruthMeter:
    """The exporters through Prometheus: what the world's pods really ran, as sampled a few
    seconds ago (or up to ``at``, when that is older)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def job_energy(
        self, namespace: str, pods: Sequence[str], range_seconds: int, at: datetime | None = None
    ) -> JobEnergy | None:
        sampled = self.world.now - timedelta(seconds=SCRAPE_LAG_SECONDS)
        if at is not None:
            sampled = min(sampled, at)
        seconds, seen = 0.0, False
        for pod in pods:
            name, _, k = pod.rpartition("-p")
            runs = self.world.runs.get(name) or []
            if not k.isdigit() or int(k) >= len(runs):
                continue
            start, end = runs[int(k)]
            assert start is not None
            if start <= sampled:
                seen = True
                seconds += ((min(end, sampled) if end else sampled) - start).total_seconds()
        return JobEnergy(seconds * PER_SECOND, False, sampled) if seen else None


class World:
    def __init__(self, metered: bool = False) -> None:
        self.config = OperatorConfig(workers=1, energy_source=TruthMeter(self) if metered else None)
        self.api = FakeApi()
        self.api.add_budget("team", LIMIT, periodSeconds=PERIOD)
        self.now = T0
        self.memory = PassMemory()
        self.created: list[str] = []
        # Each job's pods' runs (start, end or None while it runs); a job suspended and
        # admitted again (its budget deleted and recreated) runs a new pod.
        self.runs: dict[str, list[list[datetime | None]]] = {}
        self.finished: set[str] = set()
        self.max_run: dict[str, int] = {}  # a job told to overrun runs past its estimate
        self.stale: dict[str, dict[str, Any]] = {}  # pods the next pass sees still running
        self.conflicting = False
        self.closed_periods = 0.0
        self.books_closed = 0  # each closed book's figure is rounded to a microwatt-hour
        self.period_start: str | None = None
        self.last_consumed = 0.0
        self.held_before: set[str] = set()
        self.lowered = False  # an edit lowered the limit
        self.carried = 0.0  # metered energy a closed period left to the next one
        self.limits = {1: LIMIT}  # the limit in force at each generation of the budget

    @property
    def started(self) -> dict[str, datetime]:
        return {name: runs[0][0] for name, runs in self.runs.items() if runs[0][0]}

    def running(self, name: str) -> bool:
        runs = self.runs.get(name) or []
        return bool(runs) and runs[-1][1] is None

    def ran_seconds(self, name: str) -> float:
        total = 0.0
        for start, end in self.runs.get(name) or []:
            assert start is not None
            total += ((end or self.now) - start).total_seconds()
        return total

    def run_pass(self, closing: bool = False) -> None:
        api = self.api
        # A watch lags by seconds, not minutes: a pass this late sees the pod as it is.
        for pod, seen in list(self.stale.items()):
            ended = seen["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
            if self.now - cast(datetime, parse_time(ended)) > timedelta(seconds=10):
                api.pods[pod] = self.stale.pop(pod)
        real_patch = api.patch_lepton_job_status
        if self.conflicting:

            def conflict(*args: Any, **kwargs: Any) -> None:
                api.touch(args[1])
                raise ConflictError("LeptonJob changed meanwhile")

            api.patch_lepton_job_status = conflict  # type: ignore[method-assign]
        try:
            reconcile_budget(api, self.config, self.memory, NS, "team", self.now, closing=closing)  # type: ignore[arg-type]
        finally:
            api.patch_lepton_job_status = real_patch  # type: ignore[method-assign]
            self.conflicting = False
            api.pods.update(self.stale)  # the pods' watch catches up
            self.stale = {}
        self.check()
        self.kubelet()

    def kubelet(self) -> None:
        """The Job controller and the kubelet: an un-suspended Job's pod starts at once, a
        suspended one's stops."""
        api = self.api
        for name, job in api.jobs.items():
            if name in self.finished:
                continue
            if job["spec"].get("suspend") is False and not self.running(name):
                runs = self.runs.setdefault(name, [])
                api.run_pod(name, f"{name}-p{len(runs)}", self.now)
                runs.append([self.now, None])
                job["status"] = {"startTime": _stamp(self.now), "ready": 1}
            elif job["spec"].get("suspend") is True and self.running(name):
                self.stop_pod(name, self.now)
                job["status"] = {}

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
            if self.config.energy_source is None:
                assert closed == pytest.approx(ran_in_it, rel=1e-6, abs=1e-6), "wrong period"
            else:  # a period ends at the meter's newest sample before its end: those seconds
                # go to the next period (the totals stay exact; checked at the end), so this
                # period also holds what the one before it left over
                lag = SCRAPE_LAG_SECONDS * len(self.runs) * PER_SECOND
                due = ran_in_it + self.carried
                assert due - lag - 1e-6 <= closed <= due + 1e-6, "wrong period"
                self.carried = due - closed
            self.closed_periods += closed
            self.books_closed += 1
        self.period_start = status["periodStartTime"]
        self.last_consumed = status["consumedWattHours"]
        used_and_held = status["consumedWattHours"] + status["heldWattHours"]
        # The limit the status was computed under (a pass that died before writing leaves the
        # books of the limit before an edit).
        limit = self.limits[status["observedGeneration"]]
        uids = [r["jobUid"] for r in status["reservations"]]
        admitted_now = set(uids) - self.held_before
        self.held_before = set(uids)
        # Within the limit in force, but for what the status shows: the overrun, and what
        # admitted jobs hold beyond a limit an edit lowered under them (they keep their
        # reservations); that last is none unless it was lowered, and after every pass that
        # admitted a job.
        overrun, over_limit = status["overrunWattHours"], status["overLimitWattHours"]
        assert used_and_held <= limit + overrun + over_limit + 2e-6, (status, limit)
        if admitted_now or not self.lowered:
            assert used_and_held <= limit + overrun + EPSILON_WATT_HOURS, (status, limit)
            assert over_limit == 0.0, status
        assert len(uids) == len(set(uids)), "a job holds two reservations"
        assert not set(uids) & set(status["settledJobUids"]), "a settled job holds a reservation"

    def ran_between(self, start: str, end: str) -> float:
        """Watt-hours the pods ran between two of the budget's period starts."""
        since, until = parse_time(start), parse_time(end)
        assert since is not None and until is not None
        seconds = 0.0
        for runs in self.runs.values():
            for started, stopped in runs:
                assert started is not None
                stopped = stopped or self.now
                seconds += max(0.0, (min(stopped, until) - max(started, since)).total_seconds())
        return seconds * PER_SECOND

    def stop_pod(self, name: str, at: datetime, finished: bool = False) -> None:
        runs = self.runs[name]
        started = runs[-1][0]
        assert started is not None
        runs[-1][1] = at
        pod = self.api.pods[f"{name}-p{len(runs) - 1}"]
        pod["status"]["containerStatuses"][0]["state"] = {
            "terminated": {"startedAt": _stamp(started), "finishedAt": _stamp(at)}
        }
        if finished:
            self.finished.add(name)
            self.api.jobs[name]["status"] = {
                "startTime": _stamp(started),
                "completionTime": _stamp(at),
                "conditions": [
                    {"type": "Complete", "status": "True", "lastTransitionTime": _stamp(at)}
                ],
            }

    def advance(self, seconds: int) -> None:
        target = self.now + timedelta(seconds=seconds)
        for name in list(self.runs):
            if not self.running(name):
                continue
            left = self.max_run.get(name, MAX_RUN) - self.ran_seconds(name)
            if target - self.now > timedelta(seconds=left):
                self.stop_pod(name, self.now + timedelta(seconds=left), finished=True)
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
        elif kind in ("finish", "stale") and name and self.running(name):
            self.stop_pod(name, self.now, finished=True)
            if kind == "stale":  # the Jobs' watch is ahead of the pods': one pass sees it run
                pod = f"{name}-p{len(self.runs[name]) - 1}"
                self.stale[pod] = copy.deepcopy(api.pods[pod])
                started = self.runs[name][-1][0]
                assert started is not None
                api.pods[pod]["status"]["containerStatuses"][0]["state"] = {
                    "running": {"startedAt": _stamp(started)}
                }
        elif kind == "overrun" and name:
            self.max_run[name] = int(ESTIMATE.duration_seconds * 1.5)
        elif kind == "gone" and name and api.state(name) == "Finished" and name in api.jobs:
            # A finished job's Job (and its pods) deleted: a user, or ttlSecondsAfterFinished.
            del api.jobs[name]
            for k in range(len(self.runs.get(name) or [])):
                api.pods.pop(f"{name}-p{k}", None)
                self.stale.pop(f"{name}-p{k}", None)
        elif kind == "conflict":  # kopf or a user writes each LeptonJob during the pass
            self.conflicting = True
            self.run_pass()
        elif kind == "delete" and name:
            self.advance(later)  # deleted some time after the last pass
            meta = api.lepton_jobs[name]["metadata"]
            meta["deletionTimestamp"] = _stamp(self.now)
            self.run_pass()  # kopf's finalizer: a pass settles it before it goes
            for _ in range(70):  # its pod stops (its Job suspended), the meter catches up
                if api.lepton_jobs[name]["metadata"]["uid"] not in self.held_before:
                    break
                self.now += timedelta(seconds=1)
                self.run_pass()
            assert api.lepton_jobs[name]["metadata"]["uid"] not in self.held_before
            if self.running(name):
                self.stop_pod(name, self.now)
            self.finished.add(name)
            del api.lepton_jobs[name]
            api.jobs.pop(name, None)
            for k in range(len(self.runs.get(name) or [])):
                api.pods.pop(f"{name}-p{k}", None)
        elif kind == "rebudget":
            # The budget deleted (its finalizer's closing pass suspends its jobs), then created
            # again under the same name: new books, the same jobs.
            budget = api.budgets["team"]
            budget["metadata"]["deletionTimestamp"] = _stamp(self.now)
            for _ in range(70):  # kopf retries the closing pass while a job is settling
                try:
                    self.run_pass(closing=True)
                    break
                except StillSettlingError:
                    self.kubelet()
                    self.now += timedelta(seconds=1)
            else:
                raise AssertionError("the budget's deletion waits for ever")
            self.closed_periods += self.last_consumed
            self.books_closed += 1
            self.now += timedelta(seconds=1)
            limit = budget["spec"]["limitWattHours"]
            del api.budgets["team"]
            api.add_budget("team", limit, periodSeconds=PERIOD)
            self.period_start, self.held_before, self.lowered = None, set(), False
            self.carried = 0.0  # the deleted budget's closing books took it
            self.limits = {1: limit}
            self.run_pass()
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
            self.limits[budget["metadata"]["generation"]] = new
            budget["metadata"]["resourceVersion"] = str(next(api.versions))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, st.booleans())
# Found by it: a deleted job's stale running pod was charged until the pass; a budget deleted
# while a finished job's pods lagged never wrote the job's final status.
@example(ops=[("stale", 0), ("delete", (0, 1))], metered=False)
@example(ops=[("stale", 0), ("rebudget", 0)], metered=False)
@example(ops=[("advance", 3), ("edit", 0.5), ("rebudget", 0), ("delete", (1, 0))], metered=True)
# A job's figure rounded to 6 decimals in its status, read back and settled: 0.266004 booked
# for 0.266005 ran (failed before the status figures kept full precision).
@example(ops=[("create", 0), ("edit", 2.0), ("advance", 1), ("advance", 1)], metered=False)
@example(ops=[("create", 0), ("edit", 2.0), ("advance", 1), ("advance", 1)], metered=True)
# The period after one that a lagging meter ended early holds the seconds it left over; the
# check demanded the period's own run alone (failed before the check carried them over).
@example(ops=[("advance", 900), ("advance", 580), ("delete", (0, 300))], metered=True)
def test_the_books_hold_under_any_mix_of_events(ops: list[tuple[str, Any]], metered: bool) -> None:
    world = World(metered)
    for _ in range(3):
        world.apply("create", 0)
    world.run_pass()
    for kind, value in ops:
        world.apply(kind, value)
    # Settle: every pod stops, then clean passes (which may admit and start the next jobs,
    # which stop in turn) until nothing runs.
    for _ in range(60):
        for name in list(world.runs):
            if world.running(name):
                world.stop_pod(name, world.now, finished=True)
        world.now += timedelta(seconds=4)  # past the meter's lag in a few passes
        world.run_pass()
        held = world.api.budgets["team"]["status"]["reservations"]
        if not held and not any(world.running(name) for name in world.runs):
            break
    api = world.api
    status = api.budgets["team"]["status"]

    # Every job's energy exactly once, across the periods (and the budgets of one name).
    ran = sum(world.ran_seconds(name) for name in world.runs) * PER_SECOND
    booked = world.closed_periods + status["consumedWattHours"]
    assert booked == pytest.approx(ran, rel=1e-6, abs=1e-6 * (1 + world.books_closed))

    # Nothing admitted is lost.
    live = {lj["metadata"]["uid"]: name for name, lj in api.lepton_jobs.items()}
    held = {r["jobUid"] for r in status["reservations"]}
    assert held <= set(live), "a reservation outlived its job"
    for uid, name in live.items():
        state: Any = api.state(name)
        job = api.jobs.get(name)
        finished = name in world.finished
        if finished:
            assert state == "Finished" and uid not in held, (name, state)
            used = api.lepton_jobs[name]["status"]["consumedWattHours"]
            assert used == pytest.approx(world.ran_seconds(name) * PER_SECOND, rel=1e-6, abs=1e-6)
        else:
            assert state in ("Admitted", "Running", "Waiting"), (name, state)
            assert (uid in held) == (state != "Waiting")
        if job is not None and job["spec"].get("suspend") is False and not finished:
            assert uid in held, f"{name}'s Job runs without a reservation"
