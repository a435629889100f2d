"""The Lepton scheduler on a real control plane: kube-scheduler's lepton-scheduler profile calls it.

The Lepton scheduler runs in this process with its watches on the cluster; a second
kube-scheduler (profile ``lepton-scheduler``, the repository's
KubeSchedulerConfiguration) calls it over HTTP; kwok plays the GPU nodes of
the default fleet (A40, A100, T4, L4 over three zones). Pods are made as the
operator makes them: a ``lepton.dev/job-name`` label and the hints as
annotations. Each test keeps every fleet node awake with a GPU-less pod of its
own, so that the marginal idle energy is the same everywhere and the GPU
model decides.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lepton_scheduler.app import SCHEDULER_KEY, Scheduler, SchedulerConfig, build_app

from lepton.cluster.local import LocalCluster
from lepton.cluster.processes import free_port
from lepton.core.hints import EnergyPolicy, JobHints
from lepton.core.names import EVENT_REASON_SCORED, LABEL_GPU_PRODUCT, LABEL_JOB_NAME, LABEL_ZONE
from lepton.core.predictor import PredictorConfig, Series
from lepton.demo import SERVICE_EXAMPLE
from lepton.kube import api_client
from tests.support import wait_for
from tests.support.builders import apply, job_pod
from tests.support.scheduler import FLEET_NODES, placed, serve

pytestmark = pytest.mark.e2e


class SettableHistory:
    """Utilisation history the test sets per node (Prometheus's place in production)."""

    def __init__(self) -> None:
        self.levels: dict[str, float] = {}

    def node_utilization(
        self, start: datetime, end: datetime, step_seconds: float
    ) -> Mapping[str, Series]:
        n = int((end - start).total_seconds() // step_seconds)
        t0 = start.timestamp()
        return {
            node: Series.of([(t0 + i * step_seconds, level) for i in range(n)])
            for node, level in self.levels.items()
        }


@dataclass
class Live:
    cluster: LocalCluster
    scheduler: Scheduler
    history: SettableHistory
    url: str


@pytest.fixture(scope="module")
def live(cluster: LocalCluster) -> Iterator[Live]:
    history = SettableHistory()
    config = SchedulerConfig(
        forecast_interval_seconds=0.5,
        retrain_interval_seconds=3600,
        history_seconds=4 * 3600,
        predictor=PredictorConfig(max_iter=10),
    )
    app = build_app(kube_api=api_client(str(cluster.kubeconfig)), history=history, config=config)
    url, stop = serve(app)
    scheduler = app[SCHEDULER_KEY]
    wait_for(lambda: scheduler.synced, 60, "the Lepton scheduler's caches to sync")
    cluster.start_lepton_scheduler(url)
    try:
        yield Live(cluster, scheduler, history, url)
    finally:
        cluster.stop_lepton_scheduler()
        stop()


def keep_nodes_awake(cluster: LocalCluster, namespace: str) -> None:
    """A running, GPU-less pod bound to every fleet node (placing there wakes nothing)."""
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"awake-{node}"},
            "spec": {
                "nodeName": node,
                "restartPolicy": "Never",
                "containers": [{"name": "idle", "image": "busybox"}],
            },
        }
        for node in FLEET_NODES
    ]
    apply(cluster, namespace, *pods)


def _awake_seen(live: Live, namespace: str) -> bool:
    return all(live.scheduler.cache.pod(namespace, f"awake-{n}") for n in FLEET_NODES)


def node_labels(cluster: LocalCluster) -> dict[str, dict[str, str]]:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return {n["metadata"]["name"]: n["metadata"]["labels"] for n in nodes}


def _every_gpu_free(live: Live) -> bool:
    table, _ = live.scheduler.cache.table(FLEET_NODES)
    return bool((table.free_gpus == table.total_gpus).all())


@pytest.fixture
def awake(live: Live, namespace: str) -> str:
    # Each test starts from an empty fleet: an earlier test's pods (its namespace is still
    # being deleted) would otherwise hold the GPUs this test expects to be chosen.
    wait_for(lambda: _every_gpu_free(live), 120, "every GPU free (earlier tests' pods gone)")
    keep_nodes_awake(live.cluster, namespace)
    wait_for(lambda: _awake_seen(live, namespace), 30, "the keep-awake pods in the cache")
    return namespace


def test_efficiency_job_lands_on_the_gpu_model_with_least_energy(live: Live, awake: str) -> None:
    hints = JobHints(job_name="frugal", energy_policy=EnergyPolicy.EFFICIENCY)
    apply(live.cluster, awake, job_pod("frugal-0", hints))
    node = placed(live.cluster, awake, ["frugal-0"])["frugal-0"]
    # The L4's 72 W board does a reference GPU-hour for the least energy in the fleet.
    assert node_labels(live.cluster)[node][LABEL_GPU_PRODUCT] == "NVIDIA-L4"
    explained = live.scheduler.explain(f"{awake}/frugal-0")
    energies = {n["gpuModel"]: n["energyWattHours"] for n in explained["nodes"]}
    assert min(energies, key=lambda m: energies[m]) == "NVIDIA-L4"
    # and the decision is on the pod for `kubectl describe`
    wait_for(
        lambda: (
            EVENT_REASON_SCORED
            in live.cluster.kubectl(
                "get", "events", "-n", awake, "--field-selector", "involvedObject.name=frugal-0"
            ).stdout
        ),
        30,
        "the LeptonScored event",
    )


def test_three_replicas_spread_one_per_zone(live: Live, awake: str) -> None:
    hints = JobHints(
        job_name="spread",
        replicas=3,
        spread_across=LABEL_ZONE,
        max_replicas_per_domain=1,
        energy_policy=EnergyPolicy.EFFICIENCY,
    )
    names = [f"spread-{i}" for i in range(3)]
    apply(live.cluster, awake, *(job_pod(n, hints) for n in names))
    nodes = placed(live.cluster, awake, names)
    labels = node_labels(live.cluster)
    zones = sorted(labels[nodes[n]][LABEL_ZONE] for n in names)
    assert zones == ["zone-a", "zone-b", "zone-c"], nodes


def _free_gpus_per_zone(live: Live) -> dict[str, int]:
    table, _ = live.scheduler.cache.table(FLEET_NODES, (LABEL_ZONE,))
    values, ids = table.domain_ids(LABEL_ZONE)
    free: Counter[str] = Counter()
    for i, zone in enumerate(ids.tolist()):
        free[values[zone]] += int(table.free_gpus[i])
    return dict(free)


def test_a_burst_of_thirty_replicas_fills_three_zones_ten_each(live: Live, awake: str) -> None:
    assert all(f >= 10 for f in _free_gpus_per_zone(live).values())
    hints = JobHints(
        job_name="burst",
        replicas=30,
        spread_across=LABEL_ZONE,
        max_replicas_per_domain=10,
        energy_policy=EnergyPolicy.EFFICIENCY,
    )
    names = [f"burst-{i}" for i in range(30)]
    apply(live.cluster, awake, *(job_pod(n, hints) for n in names))
    nodes = placed(live.cluster, awake, names, timeout=120)
    labels = node_labels(live.cluster)
    zones = Counter(labels[nodes[n]][LABEL_ZONE] for n in names)
    assert zones == {"zone-a": 10, "zone-b": 10, "zone-c": 10}, nodes


def test_nodes_whose_history_predicts_high_load_are_avoided(live: Live, awake: str) -> None:
    a40s = [n for n in FLEET_NODES if n.startswith("a40")]
    calm = "a40-c-0"
    live.history.levels = {n: (0.1 if n == calm else 0.95) for n in a40s}
    try:
        wait_for(
            lambda: live.scheduler.cache.forecasts.get(a40s[0], 0) > 0.8,
            30,
            "forecasts from the history",
        )
        hints = JobHints(job_name="calm", gpu_models=("A40",))
        apply(live.cluster, awake, job_pod("calm-0", hints))
        assert placed(live.cluster, awake, ["calm-0"])["calm-0"] == calm
    finally:
        live.history.levels = {}


def test_a_deadline_only_fast_gpus_can_meet_sends_the_job_to_them(live: Live, awake: str) -> None:
    # 8 reference GPU-hours: about 3.4 h on an A100, 8.4 h on an A40, 14 h on an L4.
    hints = JobHints(
        job_name="urgent",
        energy_policy=EnergyPolicy.EFFICIENCY,
        work_reference_gpu_hours=8.0,
        deadline_time=datetime.now(UTC) + timedelta(hours=4),
    )
    apply(live.cluster, awake, job_pod("urgent-0", hints))
    node = placed(live.cluster, awake, ["urgent-0"])["urgent-0"]
    assert node_labels(live.cluster)[node][LABEL_GPU_PRODUCT] == "NVIDIA-A100-SXM4-80GB"


def test_pods_of_other_workloads_are_scheduled_as_usual(live: Live, awake: str) -> None:
    pod = job_pod("plain-0", JobHints(job_name="x"))
    del pod["metadata"]["labels"][LABEL_JOB_NAME]
    pod["metadata"]["annotations"] = {}  # no LeptonJob and no hints: not Lepton's pod
    apply(live.cluster, awake, pod)
    assert placed(live.cluster, awake, ["plain-0"])["plain-0"] in FLEET_NODES


def test_metrics_report_decisions_from_the_live_cluster(live: Live) -> None:
    with urllib.request.urlopen(f"{live.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'lepton_scheduler_decisions_total{outcome="scored",verb="filter"}' in text
    assert 'lepton_scheduler_degraded{reason="cache_not_synced"} 0.0' in text


def test_the_lepton_scheduler_command_serves_and_gets_ready(cluster: LocalCluster) -> None:
    port = free_port()
    lepton = Path(sys.executable).with_name("lepton")
    proc = subprocess.Popen(
        [str(lepton), "scheduler", "--host=127.0.0.1", f"--port={port}",
         f"--kubeconfig={cluster.kubeconfig}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return False

        wait_for(ready, 60, "`lepton scheduler` to be ready")
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_deployment_with_service_hints_lands_on_small_efficient_gpus(
    live: Live, awake: str
) -> None:
    example = SERVICE_EXAMPLE
    live.cluster.kubectl("apply", "-n", awake, "-f", str(example))

    def pods() -> list[dict[str, Any]]:
        out = live.cluster.kubectl("get", "pods", "-n", awake, "-l", "app=embeddings", "-o", "json")
        return [p for p in json.loads(out.stdout)["items"] if p["spec"].get("nodeName")]

    wait_for(lambda: len(pods()) == 3, 60, "the Deployment's 3 replicas to be bound")
    labels = node_labels(live.cluster)
    products = {labels[p["spec"]["nodeName"]][LABEL_GPU_PRODUCT] for p in pods()}
    assert products <= {"Tesla-T4", "NVIDIA-L4"}, products
    name = pods()[0]["metadata"]["name"]
    explained = live.scheduler.explain(f"{awake}/{name}")
    assert explained["workloadKind"] == "Service"
    assert explained["job"].startswith("embeddings-")  # its ReplicaSet: the replicas are siblings
    assert {"gpuUtilization", "heldIdleWatts", "activeWatts", "powerWatts"} <= set(
        explained["nodes"][0]
    )
    # and `kubectl lepton explain` shows the service terms from the pod's LeptonScored Event
    plugin = Path(sys.executable).with_name("kubectl-lepton")

    def explain() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(plugin), "explain", name, "-n", awake],
            env={**live.cluster.env(), "KUBECONFIG": str(live.cluster.kubeconfig)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    wait_for(lambda: explain().returncode == 0, 30, "the LeptonScored event")
    out = explain().stdout
    assert "Service at 10 % of an A40" in out and "held idle" in out and "active" in out, out
