"""The request path: siblings counted without waiting, one computation per pod, stages timed."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from lepton_scheduler.app import SchedulerConfig
from lepton_scheduler.assumed import AssumedPlacements
from lepton_scheduler.events import EventRecorder

from lepton.core.hints import JobHints
from tests.support import wait_for
from tests.support.scheduler import FLEET, ZONE, extender_args, fleet_cache, lepton_pod, plain_pod

ALL = [n[0] for n in FLEET]
ZONES = {n[0]: n[3] for n in FLEET}
LIMITED = JobHints(job_name="train", replicas=3, spread_across=ZONE, max_replicas_per_domain=1)


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}" if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _bound(pod: dict[str, Any], node: str) -> dict[str, Any]:
    bound: dict[str, Any] = json.loads(json.dumps(pod))
    bound["spec"]["nodeName"] = node
    return bound


def test_assumed_placements_expire_exclude_and_forget() -> None:
    now = [0.0]
    record = AssumedPlacements(ttl_seconds=10, clock=lambda: now[0])
    record.assume("ml", "train", "u1", "a40-0")
    record.assume("ml", "train", "u2", "h100-1")
    record.assume("ml", "other", "u3", "t4-0")
    assert sorted(record.nodes("ml", "train", exclude_uid="")) == ["a40-0", "h100-1"]
    assert record.nodes("ml", "train", exclude_uid="u1") == ["h100-1"]
    assert record.nodes("ml", "train", exclude_uid="", known={"u2"}) == ["a40-0"]
    record.assume("ml", "train", "u1", "l4-0")  # asked again: replaces
    assert sorted(record.nodes("ml", "train", exclude_uid="")) == ["h100-1", "l4-0"]
    record.forget("u2")
    assert record.nodes("ml", "train", exclude_uid="") == ["l4-0"]
    now[0] = 10.0
    assert record.nodes("ml", "train", exclude_uid="") == []
    assert len(record) == 1  # u3's job was not asked about yet


def test_filter_lets_a_limited_replica_into_the_domain_of_its_best_node_only(
    make_server: Any,
) -> None:
    server = make_server(fleet_cache())
    body = server.post("filter", extender_args(lepton_pod(LIMITED, name="train-0"), ALL)).json()
    zones = {ZONES[n] for n in body["NodeNames"]}
    assert len(zones) == 1
    (zone,) = zones
    left_out = [n for n in ALL if ZONES[n] != zone]
    assert set(left_out) <= set(body["FailedAndUnresolvableNodes"])
    assert f"{ZONE}={zone}" in body["FailedAndUnresolvableNodes"][left_out[0]]
    assert server.scheduler.assumed.node_of("uid-train-0") in body["NodeNames"]


def test_a_burst_of_replicas_lands_one_per_zone_before_any_is_seen_bound(
    make_server: Any,
) -> None:
    server = make_server(fleet_cache())
    zones = []
    for i in range(3):
        args = extender_args(lepton_pod(LIMITED, name=f"train-{i}"), ALL)
        started = time.monotonic()
        passed = server.post("filter", args).json()["NodeNames"]
        ranked = server.post("prioritize", extender_args(args["Pod"], passed)).json()
        assert time.monotonic() - started < 0.1
        zones.append(ZONES[max(ranked, key=lambda e: e["Score"])["Host"]])
    assert sorted(zones) == ["zone-a", "zone-b", "zone-c"]
    fourth = extender_args(lepton_pod(LIMITED, name="train-3"), ALL)
    assert server.post("filter", fourth).json()["NodeNames"] == []


def test_the_watch_replaces_an_assumption_by_where_the_pod_was_bound(make_server: Any) -> None:
    cache = fleet_cache()
    server = make_server(cache)
    first = lepton_pod(LIMITED, name="train-0")
    cache.upsert_pod(first)
    server.post("filter", extender_args(first, ALL))
    assumed = server.scheduler.assumed.node_of("uid-train-0")
    assert assumed is not None
    elsewhere = next(n for n in ALL if ZONES[n] != ZONES[assumed])
    bound = _bound(first, elsewhere)  # kube-scheduler chose another node after all
    cache.upsert_pod(bound)
    server.scheduler.observe_pod(bound)
    assert server.scheduler.assumed.node_of("uid-train-0") is None
    body = server.post("filter", extender_args(lepton_pod(LIMITED, name="train-1"), ALL)).json()
    assert ZONES[elsewhere] not in {ZONES[n] for n in body["NodeNames"]}
    # deleted: it counts no more
    cache.delete_pod(bound)
    server.scheduler.forget_pod(bound)
    server.scheduler.forget_pod(lepton_pod(LIMITED, name="train-1"))
    body = server.post("filter", extender_args(lepton_pod(LIMITED, name="train-2"), ALL)).json()
    first_choice = server.scheduler.assumed.node_of("uid-train-2")
    assert first_choice is not None and ZONES[first_choice] == ZONES[assumed]


def test_prioritize_reuses_filters_computation_unless_the_cache_changed(
    make_server: Any,
) -> None:
    cache = fleet_cache()
    server = make_server(cache)
    hints = JobHints(job_name="train")
    pod = lepton_pod(hints, name="train-0")
    passed = server.post("filter", extender_args(pod, ALL)).json()["NodeNames"]
    hit = server.post("prioritize", extender_args(pod, passed)).json()
    metrics = server.get("/metrics").text
    assert _metric(metrics, "lepton_scheduler_prioritize_reuse_total", result="hit") == 1
    assert _metric(metrics, "lepton_scheduler_prioritize_reuse_total", result="miss") == 0
    # the same answer as computed afresh
    assert server.post("prioritize", extender_args(pod, passed)).json() == hit
    server.post("filter", extender_args(pod, ALL))
    busy = lepton_pod(JobHints(job_name="other"), name="other-0")
    cache.upsert_pod(_bound(busy, passed[0]))  # the cache moved on in between
    server.post("prioritize", extender_args(pod, passed))
    metrics = server.get("/metrics").text
    assert _metric(metrics, "lepton_scheduler_prioritize_reuse_total", result="hit") == 1
    assert _metric(metrics, "lepton_scheduler_prioritize_reuse_total", result="miss") == 2


def test_pods_without_hints_are_answered_while_the_cache_is_locked(make_server: Any) -> None:
    cache = fleet_cache()
    server = make_server(cache)
    args = extender_args(plain_pod(), ALL)
    server.post("filter", args)  # warm the connection
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with cache._lock:
            held.set()
            release.wait(5)

    threading.Thread(target=hold).start()
    assert held.wait(5)
    try:
        for verb in ("filter", "prioritize"):
            started = time.monotonic()
            assert server.post(verb, args).status_code == 200
            assert time.monotonic() - started < 0.05
    finally:
        release.set()


def test_every_stage_of_a_request_is_timed_on_metrics(make_server: Any) -> None:
    server = make_server(fleet_cache())
    pod = lepton_pod(JobHints(job_name="train"))
    passed = server.post("filter", extender_args(pod, ALL)).json()["NodeNames"]
    server.post("prioritize", extender_args(pod, passed))
    metrics = server.get("/metrics").text
    name = "lepton_scheduler_phase_duration_seconds_count"
    for phase in ("decode", "table", "scoring", "encode"):
        assert _metric(metrics, name, phase=phase, verb="filter") == 1, phase
    for phase in ("decode", "table", "scoring", "explanation", "event", "encode"):
        assert _metric(metrics, name, phase=phase, verb="prioritize") == 1, phase


def test_events_are_batched_per_pod_and_rate_limited() -> None:
    posted: list[dict[str, Any]] = []
    gate = threading.Event()

    def post(namespace: str, body: dict[str, Any]) -> None:
        gate.wait(5)  # the API is slow: the queue fills meanwhile
        posted.append(body)

    dropped: list[int] = []
    recorder = EventRecorder(post, rate=0.001, burst=3, on_drop=dropped.append)
    built: list[str] = []

    def build(name: str) -> Any:
        def make() -> dict[str, Any]:
            built.append(name)
            return {"metadata": {"namespace": "ml"}, "name": name}

        return make

    recorder.record("pod-0", build("pod-0"))  # taken at once; its post waits on the gate
    time.sleep(0.2)
    for i in range(6):
        recorder.record(f"pod-{i % 3 + 1}", build(f"pod-{i % 3 + 1}#{i}"))
    recorder.record("pod-4", build("pod-4"))
    gate.set()
    wait_for(lambda: recorder.posted + recorder.dropped >= 8, 5, "all 8 events", interval=0.02)
    recorder.close()
    # pod-0 first; then one batch: the latest of pods 1-3 (3 superseded) and pod-4, of which
    # the rate lets two through (a burst of 3, pod-0 included)
    assert [b["name"] for b in posted] == ["pod-0", "pod-1#3", "pod-2#4"]
    assert recorder.dropped == 5 and sum(dropped) == 5
    assert built == ["pod-0", "pod-1#3", "pod-2#4"]  # dropped events are never built


def test_kept_explanations_are_bounded_by_their_node_rows(make_server: Any) -> None:
    config = SchedulerConfig(explanation_rows_kept=2 * len(ALL))
    server = make_server(fleet_cache(), config=config)
    for i in range(3):
        pod = lepton_pod(JobHints(job_name="train"), name=f"train-{i}")
        assert server.post("prioritize", extender_args(pod, ALL)).status_code == 200
    assert list(server.scheduler.decisions) == ["ml/train-1", "ml/train-2"]
    assert server.get("/explain?pod=ml/train-0").status_code == 404
    assert len(server.get("/explain?pod=ml/train-2").json()["nodes"]) == len(ALL)


def test_a_limited_replica_is_not_let_onto_nodes_of_unknown_domain(make_server: Any) -> None:
    server = make_server(fleet_cache())
    args = extender_args(lepton_pod(LIMITED, name="train-0"), [*ALL, "brand-new"])
    body = server.post("filter", args).json()
    assert "brand-new" not in body["NodeNames"]
    assert "domain" in body["FailedAndUnresolvableNodes"]["brand-new"]
    # a job without a maximum still fails open on it
    soft = JobHints(job_name="soft", replicas=3, spread_across=ZONE)
    body = server.post("filter", extender_args(lepton_pod(soft, name="soft-0"), [*ALL, "new"]))
    assert "new" in body.json()["NodeNames"]


def test_a_replica_with_one_node_left_counts_there_without_prioritize(make_server: Any) -> None:
    server = make_server(fleet_cache())
    soft = JobHints(job_name="soft", replicas=2, spread_across=ZONE, gpu_models=("T4",))
    body = server.post("filter", extender_args(lepton_pod(soft, name="soft-0"), ALL)).json()
    assert body["NodeNames"] == ["t4-0"]  # kube-scheduler binds it without asking prioritize
    assert server.scheduler.assumed.node_of("uid-soft-0") == "t4-0"


def test_filter_best_answers_the_top_ties_of_filter_then_prioritize_in_one_call(
    make_server: Any,
) -> None:
    pods = [
        lepton_pod(JobHints(job_name="train"), name="train-0"),
        lepton_pod(JobHints(job_name="spread", replicas=3, spread_across=ZONE), name="spread-0"),
    ]
    for pod in pods:
        two = make_server(fleet_cache())  # the two-call answer, on a server of its own
        passed = two.post("filter", extender_args(pod, ALL)).json()["NodeNames"]
        ranked = two.post("prioritize", extender_args(pod, passed)).json()
        top = max(e["Score"] for e in ranked)
        server = make_server(fleet_cache())
        body = server.post("filter-best", extender_args(pod, ALL)).json()
        assert body["NodeNames"] == [e["Host"] for e in ranked if e["Score"] == top]
        assert len(body["NodeNames"]) < len(passed)  # narrowed: the fleet's models differ
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        explained = server.get(f"/explain?pod={key}")
        assert explained.status_code == 200, explained.text
        assert explained.json() == two.get(f"/explain?pod={key}").json()
    # the spreading replica counts for its siblings where it was ranked best
    assert server.scheduler.assumed.node_of("uid-spread-0") in body["NodeNames"]


def test_filter_best_keeps_a_limited_replica_in_the_domain_filter_chose(make_server: Any) -> None:
    server = make_server(fleet_cache())
    pod = lepton_pod(LIMITED, name="train-0")
    body = server.post("filter-best", extender_args(pod, ALL)).json()
    assert {ZONES[n] for n in body["NodeNames"]} == {
        ZONES[server.scheduler.assumed.node_of("uid-train-0")]
    }
    assert body["NodeNames"]
