"""The extender protocol over real HTTP, with payloads as kube-scheduler sends them."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from lepton_scheduler.protocol import decode_extender_args

from lepton.core.hints import EnergyPolicy, JobHints, WorkloadKind
from lepton.core.profiles import get_profile
from tests.support.scheduler import (
    FLEET,
    NOW,
    ZONE,
    extender_args,
    fleet_cache,
    keep_awake,
    lepton_pod,
    node_json,
    plain_pod,
)

ALL = [n[0] for n in FLEET]


def test_filter_answers_an_extender_filter_result_in_pascal_case(make_server: Any) -> None:
    server = make_server(fleet_cache())
    hints = JobHints(job_name="train", gpu_models=("H100", "A40"), gpus_per_replica=2)
    response = server.post("filter", extender_args(lepton_pod(hints), ALL))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
    assert sorted(body["NodeNames"]) == ["a40-0", "a40-1", "h100-0", "h100-1"]
    assert body["FailedNodes"] == {}
    assert set(body["FailedAndUnresolvableNodes"]) == {"t4-0", "l4-0"}
    assert "gpuModels" in body["FailedAndUnresolvableNodes"]["t4-0"]
    assert body["Error"] == ""


def test_prioritize_answers_integer_scores_for_every_node(make_server: Any) -> None:
    server = make_server(fleet_cache())
    hints = JobHints(job_name="train", energy_policy=EnergyPolicy.EFFICIENCY)
    response = server.post("prioritize", extender_args(lepton_pod(hints), ALL))
    assert response.status_code == 200
    body = response.json()
    assert [entry["Host"] for entry in body] == ALL
    for entry in body:
        assert set(entry) == {"Host", "Score"}
        assert type(entry["Score"]) is int and 0 <= entry["Score"] <= 10
    # no float anywhere in the wire text: Go would refuse to decode it into int64
    assert "." not in response.text.replace("-", "").split('"Score":')[1].split(",")[0]
    scores = {e["Host"]: e["Score"] for e in body}
    assert max(scores, key=lambda n: scores[n]).startswith("h100")


def test_keys_are_decoded_case_insensitively_as_go_does(make_server: Any) -> None:
    server = make_server(fleet_cache())
    pod = lepton_pod(JobHints(job_name="train", gpu_models=("T4",)))
    for payload in (
        {"pod": pod, "nodenames": ALL},
        {"POD": pod, "NODENAMES": ALL},
        {"pOd": pod, "nodeNames": ALL, "nodes": None},
    ):
        body = server.post("filter", payload).json()
        assert body["NodeNames"] == ["t4-0"], payload.keys()
        assert len(server.post("prioritize", payload).json()) == len(ALL)


def test_pods_of_other_schedulers_pass_through_untouched(make_server: Any) -> None:
    server = make_server(fleet_cache())
    args = extender_args(plain_pod(), ALL)
    assert server.post("filter", args).json() == {
        "NodeNames": ALL,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": "",
    }
    scores = server.post("prioritize", args).json()
    assert len({e["Score"] for e in scores}) == 1
    assert [e["Host"] for e in scores] == ALL


def test_whole_nodes_are_accepted_when_not_node_cache_capable(make_server: Any) -> None:
    server = make_server(fleet_cache())
    nodes = [node_json(*n) for n in FLEET]
    pod = lepton_pod(JobHints(job_name="train", gpu_models=("L4",)))
    body = server.post("filter", {"Pod": pod, "Nodes": {"items": nodes}, "NodeNames": None}).json()
    assert [n["metadata"]["name"] for n in body["Nodes"]["items"]] == ["l4-0"]
    assert body["NodeNames"] is None


def test_nodes_the_cache_has_not_seen_yet_fail_open(make_server: Any) -> None:
    server = make_server(fleet_cache())
    body = server.post("filter", extender_args(lepton_pod(), [*ALL, "brand-new"])).json()
    assert "brand-new" in body["NodeNames"]
    scores = server.post("prioritize", extender_args(lepton_pod(), [*ALL, "brand-new"])).json()
    assert {e["Host"]: e["Score"] for e in scores}["brand-new"] == 0


def test_too_few_free_gpus_is_a_resolvable_failure(make_server: Any) -> None:
    cache = fleet_cache()
    busy = lepton_pod(JobHints(job_name="other"), name="other-1")
    busy["spec"]["nodeName"] = "a40-0"
    busy["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    busy["status"]["phase"] = "Running"
    cache.upsert_pod(busy)
    server = make_server(cache)
    body = server.post("filter", extender_args(lepton_pod(), ["a40-0", "a40-1"])).json()
    assert body["NodeNames"] == ["a40-1"]
    assert "free GPUs" in body["FailedNodes"]["a40-0"]


def test_placed_replicas_count_against_max_replicas_per_domain(make_server: Any) -> None:
    cache = fleet_cache()
    hints = JobHints(job_name="train", replicas=3, spread_across=ZONE, max_replicas_per_domain=1)
    first = lepton_pod(hints, name="train-0")
    first["spec"]["nodeName"] = "h100-0"  # zone-a
    cache.upsert_pod(first)
    server = make_server(cache)
    body = server.post("filter", extender_args(lepton_pod(hints, name="train-1"), ALL)).json()
    assert not {"a40-0", "h100-0"} & set(body["NodeNames"])
    assert "maxReplicasPerDomain" in body["FailedAndUnresolvableNodes"]["a40-0"]


def _zone(node: str) -> str:
    return {n[0]: n[3] for n in FLEET}[node]


def test_a_replica_never_waits_for_its_unbound_sibling_and_counts_it_where_ranked(
    make_server: Any,
) -> None:
    cache = fleet_cache()
    server = make_server(cache)
    hints = JobHints(job_name="train", replicas=2, spread_across=ZONE, max_replicas_per_domain=1)
    first = lepton_pod(hints, name="train-0")
    cache.upsert_pod(first)  # pending, and never seen bound during this test
    passed = server.post("filter", extender_args(first, ALL)).json()["NodeNames"]
    ranked = server.post("prioritize", extender_args(first, passed)).json()
    top = max(ranked, key=lambda e: e["Score"])["Host"]
    second = extender_args(lepton_pod(hints, name="train-1"), ALL)
    server.post("filter", second)  # warm the connection
    for _ in range(20):
        started = time.monotonic()
        body = server.post("filter", second).json()
        assert time.monotonic() - started < 0.05
        # the sibling counts in the zone of the node it was ranked best on
        assert {_zone(n) for n in body["NodeNames"]} and _zone(top) not in {
            _zone(n) for n in body["NodeNames"]
        }


def test_deadline_only_fast_gpus_meet_filters_the_rest(make_server: Any) -> None:
    server = make_server(fleet_cache())
    hints = JobHints(
        job_name="train", work_reference_gpu_hours=8, deadline_time=NOW + timedelta(hours=3)
    )
    body = server.post("filter", extender_args(lepton_pod(hints), ALL)).json()
    assert sorted(body["NodeNames"]) == ["h100-0", "h100-1"]
    assert "deadline" in body["FailedAndUnresolvableNodes"]["a40-0"]


def test_budget_pressure_from_the_energy_budget_cache_moves_scores_to_energy(
    make_server: Any,
) -> None:
    cache = fleet_cache(
        [("l4-0", "NVIDIA-L4", 4, "a"), ("a100-0", "NVIDIA-A100-SXM4-80GB", 8, "a")]
    )
    keep_awake(cache, "l4-0", "a100-0")  # neither wakes a node: only the GPUs differ
    server = make_server(cache)
    hints = JobHints(job_name="train", energy_policy=EnergyPolicy.PERFORMANCE)
    pod = lepton_pod(hints)
    pod["metadata"]["labels"]["lepton.dev/budget-name"] = "team-a"
    args = extender_args(pod, ["l4-0", "a100-0"])
    relaxed = {e["Host"]: e["Score"] for e in server.post("prioritize", args).json()}
    cache.upsert_budget(
        {
            "metadata": {"namespace": "ml", "name": "team-a"},
            "spec": {"limitWattHours": 1000},
            "status": {"remainingWattHours": 0},
        }
    )
    pressed = {e["Host"]: e["Score"] for e in server.post("prioritize", args).json()}
    assert relaxed["a100-0"] > relaxed["l4-0"]
    assert pressed["l4-0"] > pressed["a100-0"]


def test_explain_shows_each_term_of_the_last_decision(make_server: Any) -> None:
    server = make_server(fleet_cache())
    server.post("prioritize", extender_args(lepton_pod(), ALL))
    response = server.get("/explain", params={"pod": "ml/train-abc12"})
    assert response.status_code == 200
    body = response.json()
    assert body["pod"] == "ml/train-abc12" and body["job"] == "train"
    assert len(body["nodes"]) == len(ALL)
    assert {"energyWattHours", "durationSeconds", "predictedUtilization", "score"} <= set(
        body["nodes"][0]
    )
    assert body["nodes"][0]["score"] >= body["nodes"][-1]["score"]


def test_health_readiness_and_metrics(make_server: Any) -> None:
    server = make_server(fleet_cache())
    server.post("prioritize", extender_args(lepton_pod(), ALL))
    server.post("filter", extender_args(plain_pod(), ALL))
    assert server.get("/healthz").text == "ok"
    assert server.get("/readyz").status_code == 200
    text = server.get("/metrics").text
    assert 'lepton_scheduler_request_duration_seconds_bucket{le="0.005",verb="prioritize"}' in text
    assert 'lepton_scheduler_decisions_total{outcome="scored",verb="prioritize"} 1.0' in text
    assert 'lepton_scheduler_decisions_total{outcome="passthrough",verb="filter"} 1.0' in text
    assert 'lepton_scheduler_degraded{reason="cache_not_synced"} 0.0' in text
    assert 'lepton_scheduler_cache_objects{kind="nodes"} 6.0' in text


def test_scored_pods_are_counted_by_their_workload_kind(make_server: Any) -> None:
    # The kind has one name from the pod's lepton.dev/workload-kind annotation to the
    # explanation's workloadKind and this metric's workload_kind label (missing before).
    server = make_server(fleet_cache())
    service = JobHints(
        job_name="infer", workload_kind=WorkloadKind.SERVICE, reference_utilization_percent=20
    )
    server.post("prioritize", extender_args(lepton_pod(), ALL))
    server.post("prioritize", extender_args(lepton_pod(service, name="infer-1"), ALL))
    server.post("prioritize", extender_args(lepton_pod(service, name="infer-2"), ALL))
    text = server.get("/metrics").text
    assert 'lepton_scheduler_pods_scored_total{workload_kind="Batch"} 1.0' in text
    assert 'lepton_scheduler_pods_scored_total{workload_kind="Service"} 2.0' in text


def deployment_pod(name: str, gpus: int) -> dict[str, Any]:
    """A Deployment's pod with service hints and no gpus-per-replica annotation."""
    pod = plain_pod(name)
    pod["metadata"]["annotations"] = {
        "lepton.dev/workload-kind": "Service",
        "lepton.dev/reference-utilization-percent": "10",
    }
    pod["metadata"]["ownerReferences"] = [
        {"kind": "ReplicaSet", "name": "svc-7d", "controller": True}
    ]
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    pod["spec"]["containers"][0]["resources"] = {"limits": limits, "requests": limits}
    return pod


def test_a_pod_without_a_leptonjob_is_scored_for_the_gpus_it_requests(make_server: Any) -> None:
    # Found in review: a Deployment's pod without lepton.dev/gpus-per-replica was scored as a
    # 1-GPU pod whatever it asked for: a 2-GPU service was charged one GPU's idle draw, and
    # a CPU-only pod carrying service hints failed every node with no free GPU.
    server = make_server(fleet_cache())
    server.post("prioritize", extender_args(deployment_pod("svc-2", 2), ALL))
    rows = server.get("/explain", params={"pod": "ml/svc-2"}).json()["nodes"]
    l4 = next(r for r in rows if r["node"] == "l4-0")
    assert l4["heldIdleWatts"] == pytest.approx(2 * get_profile("L4").idle_watts, abs=0.1)
    cpu = deployment_pod("svc-cpu", 0)
    server.scheduler.cache.upsert_node(node_json("cpu-0", "", 0, "zone-a"))
    body = server.post("filter", extender_args(cpu, [*ALL, "cpu-0"])).json()
    assert "cpu-0" in body["NodeNames"] and body["FailedNodes"] == {}, body


def test_unsynced_cache_fails_open_and_reports_degraded(make_server: Any) -> None:
    server = make_server(fleet_cache())
    server.scheduler.require_sync = ("nodes", "pods", "never")
    assert server.get("/readyz").status_code == 503
    body = server.post("filter", extender_args(lepton_pod(JobHints("t", gpu_models=("T4",))), ALL))
    assert body.json()["NodeNames"] == ALL
    assert 'lepton_scheduler_degraded{reason="cache_not_synced"} 1.0' in server.get("/metrics").text


def test_decoder_accepts_the_exact_go_marshalled_bytes() -> None:
    raw = (
        '{"Pod":{"metadata":{"name":"p","namespace":"ml","uid":"u"},"spec":{},"status":{}},'
        '"Nodes":null,"NodeNames":["n1","n2"]}'
    )
    args = decode_extender_args(json.loads(raw))
    assert args.node_names == ("n1", "n2") and args.nodes is None
    assert (args.namespace, args.name, args.uid) == ("ml", "p", "u")
