"""End to end: a service's placement by its workload's history in a real Prometheus.

A real Prometheus holds six hours of the exporter's metrics for two workloads
(backfilled with ``promtool``): one keeps its GPUs ~25 % busy, the other ~75 %.
The Lepton scheduler runs with that Prometheus and its watches on the local cluster;
kube-scheduler's ``lepton-scheduler`` profile calls it; kwok plays the default
fleet (A40, A100, T4, L4). A new pod of each workload declares 10 % of an A40
(what would send both to the small, efficient GPUs). Each is created gated
(``schedulingGates``): the watch sees it pending, the Lepton scheduler's background
thread fetches its workload's history, and the gate is lifted once the forecast
is kept, so the decision is the forecast's and not a race.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lepton_scheduler.app import SCHEDULER_KEY, SchedulerConfig, build_app
from lepton_scheduler.history import PrometheusHistory

from lepton.cluster.fleet import LABEL_GPU_PRODUCT, product_label
from lepton.cluster.local import LocalCluster
from lepton.core.hints import JobHints, WorkloadKind
from lepton.core.predictor import PredictorConfig
from lepton.core.scoring import ScoringConfig
from lepton.kube import api_client
from tests.support import wait_for
from tests.support.builders import apply, job_pod
from tests.support.scheduler import (
    HISTORY_HOURS,
    backfilled_prometheus,
    placed,
    serve,
    workload_openmetrics,
)

pytestmark = pytest.mark.e2e

WORKLOADS = {"quiet-7c9d": 0.25, "busy-5f6b": 0.75}
GATE = "test.lepton.dev/history"


def gated_service(owner: str) -> dict[str, Any]:
    hints = JobHints(owner, workload_kind=WorkloadKind.SERVICE, reference_utilization_percent=10)
    pod = job_pod(f"{owner}-new01", hints)
    pod["spec"]["schedulingGates"] = [{"name": GATE}]
    return pod


@pytest.fixture
def served(cluster: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[Any]:
    history = workload_openmetrics(int(time.time()), namespace, WORKLOADS)
    with backfilled_prometheus(tmp_path, history) as url:
        config = SchedulerConfig(
            history_seconds=HISTORY_HOURS * 3600.0,
            retrain_interval_seconds=3600,
            predictor=PredictorConfig(max_iter=20),
        )
        app = build_app(
            kube_api=api_client(str(cluster.kubeconfig)),
            history=PrometheusHistory(url),
            config=config,
        )
        scheduler_url, stop = serve(app)
        scheduler = app[SCHEDULER_KEY]
        try:
            wait_for(lambda: scheduler.synced, 60, "the Lepton scheduler's caches to sync")
            cluster.start_lepton_scheduler(scheduler_url)
            yield scheduler
        finally:
            cluster.stop_lepton_scheduler()
            stop()


def test_services_land_where_their_workloads_forecast_fits(
    cluster: LocalCluster, namespace: str, served: Any
) -> None:
    demands = served.demands
    assert demands is not None
    apply(cluster, namespace, *(gated_service(owner) for owner in WORKLOADS))
    for owner in WORKLOADS:
        wait_for(lambda o=owner: demands.kept(namespace, o), 60, f"{owner}'s forecasts")
        patch = [{"op": "remove", "path": "/spec/schedulingGates"}]
        cluster.kubectl(
            "patch", "pod", f"{owner}-new01", "-n", namespace, "--type=json",
            "-p", json.dumps(patch),
        )  # fmt: skip
    nodes = placed(cluster, namespace, [f"{o}-new01" for o in WORKLOADS], timeout=120)
    items = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    product = {n["metadata"]["name"]: n["metadata"]["labels"][LABEL_GPU_PRODUCT] for n in items}
    explained = {o: served.explain(f"{namespace}/{o}-new01") for o in WORKLOADS}
    for owner, low, high in (("quiet-7c9d", 30, 60), ("busy-5f6b", 80, 100)):
        assert low < explained[owner]["referenceUtilizationPercent"] <= high, explained[owner]
        assert any("from workload history" in n for n in explained[owner]["notes"])
    candidates = {o: {n["node"]: n for n in e["nodes"]} for o, e in explained.items()}
    # ~85 % of an A40 at p90: above the A40's target, far beyond a T4 or an L4: only A100s
    assert "A100" in product[nodes["busy-5f6b-new01"]]
    assert {product[n] for n in candidates["busy-5f6b"]} == {product_label("A100")}
    # ~40 %: an A40 is still a candidate (its forecast fits there), and where it landed
    # its forecast keeps the GPU below the service target
    assert product_label("A40") in {product[n] for n in candidates["quiet-7c9d"]}
    chosen = candidates["quiet-7c9d"][nodes["quiet-7c9d-new01"]]
    assert chosen["gpuUtilization"] < ScoringConfig().service_target_utilization, chosen
