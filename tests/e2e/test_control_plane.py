"""The local control plane is real: nodes, Jobs, the default and the Lepton scheduler profile."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lepton.cluster.fleet import DEFAULT_FLEET, Fleet, NodeGroup
from lepton.cluster.local import COMPONENTS, LocalCluster
from lepton.cluster.processes import free_port, pid_running
from lepton.core.names import LABEL_GPU_PRODUCT, LABEL_ZONE, SCHEDULER_NAME
from tests.support import wait_for
from tests.support.builders import apply, gpu_pod

pytestmark = pytest.mark.e2e


def test_every_component_reports_healthy(cluster: LocalCluster) -> None:
    report = cluster.status()
    assert set(COMPONENTS) <= set(report)
    for name in COMPONENTS:
        assert report[name]["healthy"], f"{name} unhealthy: {report[name]}"
        assert report[name]["rss_bytes"] > 0


def test_kubectl_lists_the_fleet_all_ready_with_gpu_labels(cluster: LocalCluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert sorted(by_name) == sorted(n["metadata"]["name"] for n in DEFAULT_FLEET.nodes())
    products, zones = set(), set()
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]
        assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) > 0
        products.add(node["metadata"]["labels"][LABEL_GPU_PRODUCT])
        zones.add(node["metadata"]["labels"][LABEL_ZONE])
    assert {"NVIDIA-A40", "NVIDIA-A100-SXM4-80GB", "Tesla-T4", "NVIDIA-L4"} <= products
    assert len(zones) == 3


def test_a_job_with_three_completions_completes(cluster: LocalCluster, namespace: str) -> None:
    pod = gpu_pod("three", container="work", restart_policy="Never")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "three"},
        "spec": {"completions": 3, "parallelism": 3, "template": {"spec": pod["spec"]}},
    }
    apply(cluster, namespace, job)
    cluster.kubectl(
        "wait",
        "--for=condition=Complete",
        "job/three",
        "-n",
        namespace,
        "--timeout=90s",
        timeout=100,
    )
    status = json.loads(
        cluster.kubectl("get", "job", "three", "-n", namespace, "-o", "json").stdout
    )
    assert status["status"]["succeeded"] == 3
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", "job-name=three", "-o", "json").stdout
    )["items"]
    assert len(pods) == 3
    assert all(p["spec"].get("nodeName") for p in pods), "every pod was bound to a node"


class _RecordingScheduler(BaseHTTPRequestHandler):
    """A stand-in for the Lepton scheduler: passes every node, prefers the first, records calls."""

    calls: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        verb = self.path.rsplit("/", 1)[-1]
        self.calls.append((verb, body))
        names = body.get("NodeNames") or []
        if verb == "filter":
            reply: Any = {"NodeNames": names, "FailedNodes": {}, "Error": ""}
        else:
            reply = [{"Host": n, "Score": 10 if i == 0 else 0} for i, n in enumerate(names)]
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recording_scheduler() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    port = free_port()
    _RecordingScheduler.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", port), _RecordingScheduler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", _RecordingScheduler.calls
    finally:
        server.shutdown()
        server.server_close()


def test_lepton_scheduler_profile_calls_the_scheduler_and_binds(
    cluster: LocalCluster, namespace: str, recording_scheduler: tuple[str, list[Any]]
) -> None:
    url, calls = recording_scheduler
    cluster.start_lepton_scheduler(url)
    try:
        apply(cluster, namespace, gpu_pod("placed", scheduler=SCHEDULER_NAME, container="work"))

        def bound() -> bool:
            out = cluster.kubectl(
                "get", "pod", "placed", "-n", namespace, "-o", "jsonpath={.spec.nodeName}"
            )
            return bool(out.stdout.strip())

        wait_for(bound, 60, "the pod to be bound by lepton-scheduler")
    finally:
        cluster.stop_lepton_scheduler()
    # Only this pod's calls: other tests' pods that name the profile may reach the stand-in too.
    ours = [
        (verb, body)
        for verb, body in calls
        if (body["Pod"]["metadata"]["name"], body["Pod"]["metadata"]["namespace"])
        == ("placed", namespace)
    ]
    verbs = {verb for verb, _ in ours}
    assert "filter" in verbs and "prioritize" in verbs, f"the stand-in saw {verbs} for our pod"
    filter_args = next(body for verb, body in ours if verb == "filter")
    # nodeCacheCapable: only names travel.
    assert filter_args["NodeNames"], "the scheduler sent candidate node names"
    assert filter_args.get("Nodes") is None
    node = cluster.kubectl(
        "get", "pod", "placed", "-n", namespace, "-o", "jsonpath={.spec.nodeName}"
    ).stdout
    first_candidate = next(body for verb, body in ours if verb == "prioritize")["NodeNames"][0]
    assert node == first_candidate, "the Lepton scheduler's top score decided the placement"


def test_down_leaves_no_process_and_up_again_works(tmp_path: Path, cluster: LocalCluster) -> None:
    # A second, small cluster beside the session's: both run on free loopback ports.
    small = Fleet((NodeGroup("solo", 1, "A40", 2, "zone-a"),))
    local = LocalCluster(tmp_path / "again")
    for attempt in range(2):
        started = time.monotonic()
        local.up(small)
        up_seconds = time.monotonic() - started
        assert up_seconds < 60, f"warm `up` took {up_seconds:.1f} s (attempt {attempt})"
        pids = [p.pid for p in local.state.processes.values()]
        assert len(pids) == len(COMPONENTS)
        assert all(pid_running(pid) for pid in pids)
        stopped = local.down()
        assert sorted(stopped) == sorted(pids)
        assert not [pid for pid in pids if pid_running(pid)], "processes left after down"
        assert not (tmp_path / "again").exists()
    # The session's cluster was untouched by the second one.
    assert all(row["healthy"] for row in cluster.status().values())
