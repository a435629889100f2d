"""End to end on the local control plane: CRD validation, the examples, the budget race, crashes.

The operator runs as a real subprocess (``python -m lepton_operator``) against the real
apiserver, so SIGKILL is a real crash. Its pods use the default scheduler here (the Lepton
scheduler has tests of its own), or a scheduler that does not exist when a test needs jobs that
never finish.
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lepton.api.jobspec import estimate_energy
from lepton.api.v1alpha1 import LeptonJobSpec
from lepton.cluster.local import LocalCluster
from lepton.cluster.stack import LeptonStack
from lepton.demo import EXAMPLES_DIR
from tests.support import wait_for
from tests.support.builders import apply, energy_budget, lepton_job

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def crds(cluster: LocalCluster) -> None:
    LeptonStack(cluster).install_crds()


class Operator:
    def __init__(
        self,
        cluster: LocalCluster,
        namespace: str,
        scheduler_name: str,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "lepton_operator",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--namespace",
            namespace,
            "--scheduler-name",
            scheduler_name,
            *extra,
        ]
        self.env = cluster.env()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_operator(
    cluster: LocalCluster, namespace: str, crds: None
) -> Iterator[Callable[..., Operator]]:
    started: list[Operator] = []

    def start(scheduler_name: str = "default-scheduler", *extra: str) -> Operator:
        op = Operator(cluster, namespace, scheduler_name, extra)
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def get(cluster: LocalCluster, namespace: str, *what: str) -> dict[str, Any]:
    out = cluster.kubectl("get", *what, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def a40_estimate(seconds: int = 3600) -> float:
    spec = LeptonJobSpec.model_validate(lepton_job("x", seconds=seconds)["spec"])
    return estimate_energy(spec).watt_hours


# --------------------------------------------------------------------------- bad input

_JOB = lepton_job("bad")["spec"]
BAD_INPUT: list[tuple[str, dict[str, Any], str]] = [
    ("zero limit", energy_budget(0), "spec.limitWattHours must be a positive"),
    ("negative limit", energy_budget(-5), "spec.limitWattHours must be a positive"),
    ("short period", energy_budget(10, periodSeconds=10), "spec.periodSeconds must be at least 60"),
    (
        "unknown policy",
        energy_budget(10, whenExhausted="Panic"),
        "spec.whenExhausted: Unsupported value",
    ),
    (
        "cap percent",
        energy_budget(10, cappedPowerPercent=5),
        "spec.cappedPowerPercent must be between",
    ),
    (
        "unknown gpu",
        {**lepton_job("b"), "spec": {**_JOB, "gpuModels": ["X100"]}},
        'spec.gpuModels[0]: Unsupported value: "X100"',
    ),
    (
        "zero replicas",
        {**lepton_job("b"), "spec": {**_JOB, "replicas": 0}},
        "spec.replicas must be between 1 and 1000",
    ),
    (
        "17 gpus",
        {**lepton_job("b"), "spec": {**_JOB, "gpusPerReplica": 17}},
        "spec.gpusPerReplica must be between 1 and 16",
    ),
    (
        "energy policy",
        {**lepton_job("b"), "spec": {**_JOB, "energyPolicy": "Turbo"}},
        "spec.energyPolicy: Unsupported value",
    ),
    (
        "no template",
        {**lepton_job("b"), "spec": {k: v for k, v in _JOB.items() if k != "template"}},
        "spec.template: Required value",
    ),
    (
        "zero work",
        {**lepton_job("b"), "spec": {**_JOB, "work": {"referenceGpuSeconds": 0}}},
        "spec.work.referenceGpuSeconds must be positive",
    ),
    (
        "negative duration",
        {**lepton_job("b"), "spec": {**_JOB, "work": {"durationSeconds": -1}}},
        "spec.work.durationSeconds must be positive",
    ),
    (
        "both works",
        {
            **lepton_job("b"),
            "spec": {**_JOB, "work": {"durationSeconds": 5, "referenceGpuSeconds": 5}},
        },
        "spec.work must set exactly one of",
    ),
    (
        "work and service",
        {**lepton_job("b"), "spec": {**_JOB, "service": {"referenceUtilizationPercent": 30}}},
        "spec.work or spec.service: set exactly one",
    ),
    (
        "neither work nor service",
        {**lepton_job("b"), "spec": {k: v for k, v in _JOB.items() if k != "work"}},
        "spec.work or spec.service: set exactly one",
    ),
    (
        "service over 100 %",
        {
            **lepton_job("b"),
            "spec": {
                **{k: v for k, v in _JOB.items() if k != "work"},
                "service": {"referenceUtilizationPercent": 150},
            },
        },
        "spec.service.referenceUtilizationPercent must be between 1 and 100",
    ),
    (
        "service with a deadline",
        {
            **lepton_job("b"),
            "spec": {
                **{k: v for k, v in _JOB.items() if k != "work"},
                "service": {"referenceUtilizationPercent": 30},
                "deadlineTime": "2030-01-01T00:00:00Z",
            },
        },
        "spec.deadlineTime applies to batch work only",
    ),
    (
        "watts without number",
        {**lepton_job("b"), "spec": {**_JOB, "powerCap": {"mode": "Watts"}}},
        "spec.powerCap.watts must be set when spec.powerCap.mode is Watts",
    ),
    (
        "bad budget name",
        {**lepton_job("b"), "spec": {**_JOB, "budgetName": "Team_A"}},
        "spec.budgetName must be the name of an EnergyBudget",
    ),
    (
        "missing budget name",
        {**lepton_job("b"), "spec": {k: v for k, v in _JOB.items() if k != "budgetName"}},
        "spec.budgetName: Required value",
    ),
]


def test_invalid_manifests_are_rejected_with_a_message_naming_the_field(
    cluster: LocalCluster, namespace: str, crds: None
) -> None:
    failures = []
    for label, manifest, expected in BAD_INPUT:
        result = cluster.kubectl(
            "create", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False
        )
        if result.returncode == 0 or expected not in result.stderr:
            failures.append(f"{label}: rc={result.returncode} stderr={result.stderr.strip()}")
    assert not failures, "\n".join(failures)
    assert len(BAD_INPUT) >= 12


def test_the_budget_of_a_lepton_job_cannot_be_changed(
    cluster: LocalCluster, namespace: str, crds: None
) -> None:
    apply(
        cluster,
        namespace,
        energy_budget(1000),
        energy_budget(1000, name="other"),
        lepton_job("train"),
    )
    result = cluster.kubectl(
        "patch",
        "leptonjob",
        "train",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec":{"budgetName":"other"}}',
        check=False,
    )
    assert result.returncode != 0
    assert "spec.budgetName cannot be changed" in result.stderr, result.stderr
    assert "delete the LeptonJob and create it again" in result.stderr
    assert get(cluster, namespace, "leptonjob", "train")["spec"]["budgetName"] == "team"
    # Other fields still change.
    cluster.kubectl("label", "leptonjob", "train", "-n", namespace, "team=ml", "--overwrite")


# --------------------------------------------------------------------------- examples


def test_examples_run_to_completion_and_the_big_job_waits_until_the_limit_is_raised(
    cluster: LocalCluster, namespace: str, start_operator: Callable[..., Operator]
) -> None:
    start_operator("default-scheduler")
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES_DIR))
    fitting = ["train-a40", "finetune", "batch-inference"]

    def states() -> dict[str, dict[str, Any]]:
        items = get(cluster, namespace, "leptonjobs")["items"]
        return {i["metadata"]["name"]: i.get("status") or {} for i in items}

    wait_for(
        lambda: all(states().get(n, {}).get("state") == "Finished" for n in fitting),
        120,
        "the fitting examples to finish",
    )
    now = states()
    for name in fitting:
        assert now[name]["consumedWattHours"] > 0
        assert now[name]["consumptionSource"] == "Estimated"
    pretrain = now["pretrain"]
    assert pretrain["state"] == "Waiting"
    reserved = next(c for c in pretrain["conditions"] if c["type"] == "BudgetReserved")
    assert reserved["status"] == "False" and reserved["reason"] == "ExceedsBudget"
    assert "needs 1249.19 Wh" in reserved["message"] and "1000.00 Wh" in reserved["message"]
    eb = get(cluster, namespace, "energybudget", "team-a")["status"]
    assert eb["consumedWattHours"] == pytest.approx(
        sum(now[n]["consumedWattHours"] for n in fitting), rel=1e-3
    )
    assert eb["consumedWattHours"] > 0
    cluster.kubectl(
        "patch",
        "energybudget",
        "team-a",
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        '{"spec":{"limitWattHours":3000}}',
    )
    wait_for(
        lambda: states()["pretrain"].get("state") in ("Admitted", "Running", "Finished"),
        60,
        "pretrain to be admitted after the limit was raised",
    )
    table = cluster.kubectl("get", "lepton", "-n", namespace).stdout
    assert "team-a" in table and "pretrain" in table


# --------------------------------------------------------------------------- races and crashes


ADMITTED = ("Admitted", "Running")
SETTLED = ("Admitted", "Running", "Waiting")


def _observe(cluster: LocalCluster, namespace: str, limit: int) -> list[str]:
    eb = get(cluster, namespace, "energybudget", "team").get("status") or {}
    total = eb.get("heldWattHours", 0.0) + eb.get("consumedWattHours", 0.0)
    assert total <= limit + 1e-6, f"held + consumed = {total} > limit {limit}"
    return [r["jobUid"] for r in eb.get("reservations", [])]


def test_twenty_jobs_at_once_against_a_budget_for_five_admit_exactly_five(
    cluster: LocalCluster, namespace: str, start_operator: Callable[..., Operator]
) -> None:
    limit = math.ceil(5 * a40_estimate())
    assert limit < 6 * a40_estimate()
    # Pods that never schedule keep every admitted job running: no room is ever freed.
    start_operator("no-such-scheduler")
    apply(cluster, namespace, energy_budget(limit), *(lepton_job(f"j{i:02d}") for i in range(20)))

    def settled() -> bool:
        _observe(cluster, namespace, limit)
        items = get(cluster, namespace, "leptonjobs")["items"]
        return all((i.get("status") or {}).get("state") in SETTLED for i in items)

    wait_for(settled, 90, "every job to be Admitted or Waiting")
    for _ in range(4):  # and it stays that way
        uids = _observe(cluster, namespace, limit)
        assert len(uids) == len(set(uids)) == 5
        time.sleep(0.5)
    items = get(cluster, namespace, "leptonjobs")["items"]
    assert sum(1 for i in items if i["status"]["state"] in ADMITTED) == 5
    jobs = get(cluster, namespace, "jobs")["items"]
    assert sum(1 for j in jobs if not j["spec"].get("suspend")) == 5


def test_operator_killed_during_a_burst_admits_each_job_once_and_orphans_nothing(
    cluster: LocalCluster, namespace: str, start_operator: Callable[..., Operator]
) -> None:
    limit = math.ceil(10 * a40_estimate())
    op = start_operator("no-such-scheduler")
    apply(cluster, namespace, energy_budget(limit), *(lepton_job(f"c{i:02d}") for i in range(30)))
    rng = random.Random(7)
    for _ in range(4):
        time.sleep(rng.uniform(0.3, 2.0))
        _observe(cluster, namespace, limit)
        op.kill()
        op.start()

    def settled() -> bool:
        _observe(cluster, namespace, limit)
        items = get(cluster, namespace, "leptonjobs")["items"]
        return all((i.get("status") or {}).get("state") in SETTLED for i in items)

    wait_for(settled, 120, "every job to be Admitted or Waiting after the crashes")
    uids = _observe(cluster, namespace, limit)
    assert len(uids) == len(set(uids)) == 10
    items = get(cluster, namespace, "leptonjobs")["items"]
    by_uid = {i["metadata"]["uid"]: i for i in items}
    assert {u for u, i in by_uid.items() if i["status"]["state"] in ADMITTED} == set(uids)
    jobs = get(cluster, namespace, "jobs")["items"]
    assert len(jobs) == 30
    for job in jobs:
        (owner,) = job["metadata"]["ownerReferences"]
        assert owner["uid"] in by_uid, f"Job {job['metadata']['name']} is orphaned"
    unsuspended = {
        j["metadata"]["ownerReferences"][0]["uid"] for j in jobs if not j["spec"].get("suspend")
    }
    assert unsuspended == set(uids)


def test_examples_parse_as_api_objects() -> None:
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert doc["apiVersion"] == "lepton.dev/v1alpha1", path


def test_operator_killed_while_jobs_finish_settles_each_job_exactly_once(
    cluster: LocalCluster, namespace: str, start_operator: Callable[..., Operator]
) -> None:
    # kwok completes each pod after a couple of seconds: jobs really run and finish.
    op = start_operator("default-scheduler")
    limit = math.ceil(4 * a40_estimate(60))
    apply(
        cluster,
        namespace,
        energy_budget(limit),
        *(lepton_job(f"f{i:02d}", seconds=60) for i in range(12)),
    )
    rng = random.Random(11)
    for _ in range(3):
        time.sleep(rng.uniform(1.0, 3.0))
        op.kill()
        op.start()

    def all_finished() -> bool:
        _observe(cluster, namespace, limit)
        items = get(cluster, namespace, "leptonjobs")["items"]
        return len(items) == 12 and all(
            (i.get("status") or {}).get("state") == "Finished" for i in items
        )

    wait_for(all_finished, 180, "every job to finish after the crashes")
    time.sleep(3)  # more passes: none may re-admit a finished job
    eb = get(cluster, namespace, "energybudget", "team")["status"]
    items = get(cluster, namespace, "leptonjobs")["items"]
    assert eb["reservations"] == []
    assert sorted(eb["settledJobUids"]) == sorted(i["metadata"]["uid"] for i in items)
    used = sum(i["status"]["consumedWattHours"] for i in items)
    assert used > 0
    assert eb["consumedWattHours"] == pytest.approx(used, rel=1e-6, abs=1e-5), "counted twice"


def test_deleting_a_job_settles_it_and_deleting_the_budget_suspends_the_rest(
    cluster: LocalCluster, namespace: str, start_operator: Callable[..., Operator]
) -> None:
    start_operator("no-such-scheduler")
    apply(cluster, namespace, energy_budget(10_000), lepton_job("keep"), lepton_job("drop"))

    def reserved() -> set[str]:
        eb = get(cluster, namespace, "energybudget", "team").get("status") or {}
        return {r["jobName"] for r in eb.get("reservations", [])}

    wait_for(lambda: reserved() == {"keep", "drop"}, 60, "both jobs to be admitted")
    lj = get(cluster, namespace, "leptonjob", "drop")
    assert lj["metadata"].get("finalizers"), "the operator holds LeptonJobs with a finalizer"
    cluster.kubectl("delete", "leptonjob", "drop", "-n", namespace, "--timeout=60s")
    eb = get(cluster, namespace, "energybudget", "team")["status"]
    assert {r["jobName"] for r in eb["reservations"]} == {"keep"}
    wait_for(
        lambda: (
            lj["metadata"]["uid"]
            not in get(cluster, namespace, "energybudget", "team")["status"]["settledJobUids"]
        ),
        10,
        "the settled UID to be forgotten with its LeptonJob",
    )
    reasons = [e.get("reason") for e in get(cluster, namespace, "events")["items"]]
    assert "JobDeletedSettled" in reasons, reasons

    cluster.kubectl("delete", "energybudget", "team", "-n", namespace, "--timeout=60s")
    job = get(cluster, namespace, "job", "keep")
    assert job["spec"]["suspend"] is True
    status = get(cluster, namespace, "leptonjob", "keep")["status"]
    evicted = next(c for c in status["conditions"] if c["type"] == "Evicted")
    assert evicted["reason"] == "BudgetDeleted"
    events = get(cluster, namespace, "events")["items"]
    final = [e for e in events if e.get("reason") == "BudgetDeleted"]
    assert final and "final books" in final[0]["message"], [e.get("reason") for e in events]


def _replayed_consumption(item: dict[str, Any]) -> float:
    """A job's energy as a replay of its recorded events gives it: the model's power for the
    time its pods ran (no kills, no operator: a pure function of the job and its run)."""
    from lepton.api.jobspec import estimated_consumption_watt_hours
    from lepton.core.times import parse_time

    estimate = estimate_energy(LeptonJobSpec.model_validate(item["spec"]))
    ran = 0.0
    for interval in item["status"].get("runIntervals") or []:
        start, end = parse_time(interval["start"]), parse_time(interval["end"])
        assert start is not None and end is not None
        ran += (end - start).total_seconds()
    return estimated_consumption_watt_hours(estimate, ran)


def _led_by_another(op: Operator | None, old_pid: int) -> bool:
    return op is not None and op.proc is not None and op.proc.pid != old_pid


def test_two_replicas_elect_one_leader_and_survive_three_leader_kills_with_the_books_intact(
    cluster: LocalCluster, namespace: str, start_operator: Callable[..., Operator]
) -> None:
    args = ("--leader-election", f"--leader-election-namespace={namespace}", "--lease-seconds=3")
    replicas = [start_operator("default-scheduler", *args) for _ in range(2)]

    def leader() -> Operator | None:
        # A leader that missed its renew deadline (a loaded machine starves its renew thread)
        # exits at once, by design; the Deployment restarts it as a follower, and so does this.
        for op in replicas:
            if op.proc is not None and op.proc.poll() is not None:
                op.start()
        result = cluster.kubectl(
            "get", "lease", "lepton-operator", "-n", namespace, "-o", "json", check=False
        )
        if result.returncode:
            return None
        holder = json.loads(result.stdout)["spec"].get("holderIdentity", "")
        return next((op for op in replicas if op.proc and holder.endswith(f"-{op.proc.pid}")), None)

    wait_for(lambda: leader() is not None, 30, "one replica to take the Lease")
    limit = math.ceil(5 * a40_estimate(60))
    jobs = [lepton_job(f"h{i:02d}", seconds=60) for i in range(20)]
    apply(cluster, namespace, energy_budget(limit), *jobs)
    kills = 0
    for pause in (0.5, 4.0, 4.0):  # during admission, then while jobs run and finish
        time.sleep(pause)
        _observe(cluster, namespace, limit)
        wait_for(lambda: leader() is not None, 30, "a leader")
        current = leader()
        assert current is not None
        current.kill()
        kills += 1
        old = current.proc.pid if current.proc else 0
        current.start()  # it comes back as a follower
        wait_for(lambda old=old: _led_by_another(leader(), old), 30, "another to take over")
    assert kills == 3

    def all_finished() -> bool:
        _observe(cluster, namespace, limit)
        items = get(cluster, namespace, "leptonjobs")["items"]
        return len(items) == 20 and all(
            (i.get("status") or {}).get("state") == "Finished" for i in items
        )

    wait_for(all_finished, 240, "every job to finish across the leader kills")
    time.sleep(3)
    eb = get(cluster, namespace, "energybudget", "team")["status"]
    items = get(cluster, namespace, "leptonjobs")["items"]
    assert eb["reservations"] == []
    assert sorted(eb["settledJobUids"]) == sorted(i["metadata"]["uid"] for i in items)
    booked = {i["metadata"]["name"]: i["status"]["consumedWattHours"] for i in items}
    replayed = {i["metadata"]["name"]: _replayed_consumption(i) for i in items}
    assert booked == pytest.approx(replayed, rel=1e-5, abs=1e-5)
    assert eb["consumedWattHours"] == pytest.approx(sum(replayed.values()), rel=1e-5, abs=1e-5)


def test_the_lease_has_one_holder_and_passes_on_only_after_it_expires(
    cluster: LocalCluster, namespace: str
) -> None:
    from kubernetes import client
    from lepton_operator.leader import LeaseElector

    from lepton.kube import api_client

    api = client.CoordinationV1Api(api_client(str(cluster.kubeconfig)))
    first = LeaseElector(api, namespace, "l", "first", lease_seconds=3)
    second = LeaseElector(api, namespace, "l", "second", lease_seconds=3)
    assert first.try_acquire_or_renew() and first.is_leader
    assert not second.try_acquire_or_renew() and not second.is_leader
    assert first.try_acquire_or_renew(), "the holder renews"
    time.sleep(1.5)
    assert not second.try_acquire_or_renew(), "renewed 1.5 s ago: not expired"
    # first stops renewing (it died): second takes over once the record is 3 s old by its clock.
    wait_for(second.try_acquire_or_renew, 10, "the second elector to take the lease over")
    assert not first.try_acquire_or_renew() and not first.is_leader
    lease = api.read_namespaced_lease("l", namespace)
    assert lease.spec.holder_identity == "second" and lease.spec.lease_transitions == 1


def test_a_status_write_from_a_stale_read_conflicts(
    cluster: LocalCluster, namespace: str, crds: None
) -> None:
    from lepton_operator.kube import ConflictError, KubeApi

    from lepton.kube import api_client

    apply(cluster, namespace, lepton_job("stale"))
    api = KubeApi(api_client(str(cluster.kubeconfig)))
    read = get(cluster, namespace, "leptonjob", "stale")
    api.patch_lepton_job_status(namespace, "stale", {"state": "Waiting"}, read["metadata"])
    with pytest.raises(ConflictError):  # the first write moved the resourceVersion on
        api.patch_lepton_job_status(namespace, "stale", {"state": "Running"}, read["metadata"])
    # Deleted and created again under the same name: a write decided for the old one conflicts.
    cluster.kubectl("delete", "leptonjob", "stale", "-n", namespace, "--wait=false")
    wait_for(
        lambda: (
            cluster.kubectl("get", "leptonjob", "stale", "-n", namespace, check=False).returncode
            != 0
        ),
        30,
        "the LeptonJob to go",
    )
    apply(cluster, namespace, lepton_job("stale"))
    with pytest.raises(ConflictError):
        api.patch_lepton_job_status(namespace, "stale", {"state": "Running"}, read["metadata"])
    assert "state" not in (get(cluster, namespace, "leptonjob", "stale").get("status") or {})
