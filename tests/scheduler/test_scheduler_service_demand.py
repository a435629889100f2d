"""A service's demand from its workload's utilisation history in a real Prometheus.

The history is backfilled into Prometheus's TSDB with ``promtool`` (six hours of
the exporter's metrics, one sample a minute), so the range query, the join of a
GPU's utilisation onto the pods holding it, the forecast and the placement are
all the real ones; the Lepton scheduler's tests serve it for real on a loopback port.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lepton_scheduler.app import SchedulerConfig
from lepton_scheduler.demand import ServiceDemands
from lepton_scheduler.history import PrometheusHistory

from lepton.core.hints import JobHints, WorkloadKind
from lepton.core.predictor import ForecastSource, LoadPredictor, PredictorConfig
from lepton.core.scoring import filter_nodes
from tests.support.scheduler import (
    FLEET,
    HISTORY_HOURS,
    backfilled_prometheus,
    extender_args,
    fleet_cache,
    keep_awake,
    lepton_pod,
    wait_for,
    workload_openmetrics,
)

# Two Deployments' ReplicaSets, two pods each on a GPU of its own: one quiet, one busy.
WORKLOADS = {"quiet-7c9d": 0.25, "busy-5f6b": 0.75}
ALL = [n[0] for n in FLEET]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    with backfilled_prometheus(
        tmp_path, workload_openmetrics(int(time.time()), "ml", WORKLOADS)
    ) as url:
        yield url


def service(owner: str, percent: float = 10.0) -> JobHints:
    # Declared low on purpose: measured load must win over the guess.
    return JobHints(
        owner, workload_kind=WorkloadKind.SERVICE, reference_utilization_percent=percent
    )


def service_pod(owner: str, name: str) -> dict[str, Any]:
    """A Deployment's pod as kube-scheduler sends it: owned by its ReplicaSet."""
    pod = lepton_pod(service(owner), name=name)
    del pod["metadata"]["labels"]["lepton.dev/job-name"]  # a plain Deployment's pod
    pod["metadata"]["labels"]["app"] = owner
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": owner,
            "uid": "u",
            "controller": True,
        }
    ]
    return pod


def test_pod_history_is_its_gpus_utilisation(prometheus: str) -> None:
    end = datetime.now(UTC)
    pods = PrometheusHistory(prometheus).pod_utilization(
        "ml", "quiet-7c9d-[a-z0-9]+", end - timedelta(hours=HISTORY_HOURS), end, 300.0
    )
    assert sorted(pods) == ["quiet-7c9d-x0", "quiet-7c9d-x1"]
    assert all(len(s) > 60 and 0.1 < s.values.mean() < 0.4 for s in pods.values())
    other = PrometheusHistory(prometheus).pod_utilization(
        "other", ".*", end - timedelta(hours=HISTORY_HOURS), end, 300.0
    )
    assert other == {}


def test_a_new_service_is_placed_on_a_gpu_its_forecast_fits(prometheus: str) -> None:
    """A quiet workload's new pod fits an A40; a busy one's is kept off it, onto an H100."""
    predictor = LoadPredictor(PredictorConfig(max_iter=30))
    demands = ServiceDemands(PrometheusHistory(prometheus), predictor, HISTORY_HOURS * 3600.0)
    end = datetime.now(UTC)
    history = PrometheusHistory(prometheus).pod_utilization(
        "ml", ".*", end - timedelta(hours=HISTORY_HOURS), end, 300.0
    )
    assert predictor.fit(history)
    known, _ = fleet_cache().table(ALL, ())
    placed = {}
    for owner in WORKLOADS:
        # Nothing fetched yet: the declared hints, and the workload is asked for.
        hints, demand = demands.hints("ml", f"{owner}-new01", owner, service(owner), declared=True)
        assert demand is None and hints == service(owner) and demands.wake.is_set()
    assert demands.refresh() == len(WORKLOADS)
    for owner in WORKLOADS:
        hints, demand = demands.hints("ml", f"{owner}-new01", owner, service(owner), declared=True)
        assert demand is not None and demand.source is ForecastSource.WORKLOAD_HISTORY
        assert hints.reference_utilization_percent == demand.reference_utilization_percent
        placed[owner] = (demand, {n.name for n in filter_nodes(known, hints).passed})
    quiet, busy = placed["quiet-7c9d"], placed["busy-5f6b"]
    assert 30 < quiet[0].reference_utilization_percent < 60  # the p90 of ~25 % busy
    assert busy[0].reference_utilization_percent > 80  # above the A40's 80 % target
    assert {"a40-0", "a40-1"} <= quiet[1]
    assert not {"a40-0", "a40-1"} & busy[1] and {"h100-0", "h100-1"} <= busy[1]
    # a pod with a long history of its own is forecast from it, not from its siblings'
    _, own = demands.hints("ml", "busy-5f6b-x0", "busy-5f6b", service("busy-5f6b"), declared=True)
    assert own is not None and own.source is ForecastSource.OWN_HISTORY
    # fetched a moment ago: nothing is due until the ttl has passed
    assert demands.refresh() == 0


def test_the_scheduler_places_a_service_by_its_workload_forecast(
    make_server: Any, prometheus: str
) -> None:
    """Wired into the Lepton scheduler: the watch sees the pod pending, the background thread
    fetches its workload's history, filter keeps the busy service off the A40s."""
    cache = fleet_cache()
    keep_awake(cache, *ALL)
    config = SchedulerConfig(history_seconds=HISTORY_HOURS * 3600.0)
    server = make_server(cache, history=PrometheusHistory(prometheus), config=config)
    demands = server.scheduler.demands
    assert demands is not None
    busy = service_pod("busy-5f6b", "busy-5f6b-new01")
    # first asked before anything was fetched: the declared 10 % lets every GPU through
    first = server.post("filter", extender_args(busy, ALL)).json()
    assert set(first["NodeNames"]) == set(ALL)
    wait_for(lambda: demands.kept("ml", "busy-5f6b"), 30, "the workload's forecasts")
    passed = server.post("filter", extender_args(busy, ALL)).json()["NodeNames"]
    assert not {"a40-0", "a40-1"} & set(passed) and {"h100-0", "h100-1"} <= set(passed)
    server.post("prioritize", extender_args(busy, passed))
    explained = server.get("/explain", params={"pod": "ml/busy-5f6b-new01"}).json()
    assert explained["referenceUtilizationPercent"] > 80
    assert any("from workload history" in note for note in explained["notes"]), explained
    # the watch seeing a service pod pending asks for its workload before any call
    quiet = service_pod("quiet-7c9d", "quiet-7c9d-new01")
    server.scheduler.observe_pod(quiet)
    wait_for(lambda: demands.kept("ml", "quiet-7c9d"), 30, "the quiet workload's forecasts")
    passed = server.post("filter", extender_args(quiet, ALL)).json()["NodeNames"]
    assert {"a40-0", "a40-1"} <= set(passed)


def test_filter_never_waits_on_a_prometheus_that_does_not_answer(make_server: Any) -> None:
    """A Prometheus that accepts the connection and never answers: filter answers at once,
    from the declared hints, while the background thread waits out its timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        history = PrometheusHistory(url, timeout_seconds=20)
        server = make_server(fleet_cache(), history=history)
        pod = service_pod("busy-5f6b", "busy-5f6b-new01")
        server.post("filter", extender_args(pod, ALL))  # warm the connection and parser
        started = time.perf_counter()
        for _ in range(5):
            answer = server.post("filter", extender_args(pod, ALL)).json()
            assert set(answer["NodeNames"]) == set(ALL)  # the declared 10 % fits everywhere
        assert (time.perf_counter() - started) / 5 < 1.0
    finally:
        silent.close()
