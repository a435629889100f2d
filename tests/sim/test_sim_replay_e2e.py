"""The real replay end to end: trace pods through every real scheduler on autoscaled kwok nodes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lepton.cluster import tools
from lepton.cluster.replay import replay_on_local_cluster
from lepton.sim.engine import DEFAULT_MODEL_MAP
from lepton.sim.replay import (
    BAR_ENERGY_AGREEMENT,
    REPLAY_POLICIES,
    ReplayConfig,
    compare,
    compression_for,
    trace_slice,
    whole_gpu_pods,
)
from lepton.sim.trace import (
    DEFAULT_NODE_LIST,
    DEFAULT_POD_LIST,
    load_nodes,
    load_pods,
    sample_nodes,
)

pytestmark = pytest.mark.e2e

ARRIVAL_SECONDS = 8.0
TAIL_SECONDS = 3.0


def _progress(message: str) -> None:
    print(message, file=sys.__stderr__, flush=True)


@pytest.mark.xfail(
    reason="issue 13, open: on a quiet machine every policy agrees within 2.4 %, but with the "
    "machine loaded the default scheduler's real replay of this 3-node slice comes out 16-17 % "
    "below the simulator in about half the runs (the other policies stay within 0.1 %); "
    "suspected: its spreading leaves a node empty past the compressed scale-in grace",
    strict=False,
)
def test_a_trace_slice_replays_through_every_scheduler_and_agrees_with_the_simulator(
    shipped_data: Path, tmp_path: Path
) -> None:
    traces = shipped_data / "traces"
    pods = whole_gpu_pods(trace_slice(load_pods(traces / DEFAULT_POD_LIST, limit=200), 50, 40))
    nodes = sample_nodes(load_nodes(traces / DEFAULT_NODE_LIST), 20)
    settings = ReplayConfig(
        time_compression=compression_for(pods, ARRIVAL_SECONDS),
        window_end_seconds=ARRIVAL_SECONDS + TAIL_SECONDS,
        model_map=dict(DEFAULT_MODEL_MAP),
    )
    policies = list(REPLAY_POLICIES)
    tools.build_all(("etcd", "kwok", "kubernetes"), progress=_progress)

    observed = replay_on_local_cluster(
        pods, nodes, settings, policies, tmp_path / "cluster", _progress
    )

    assert set(observed) == set(policies)
    node_names = {n.name for n in nodes}
    for run in observed.values():
        assert run.unscheduled == [], f"{run.policy}: never placed: {run.unscheduled}"
        assert set(run.starts) == {p.name for p in pods}
        assert {node for node, _ in run.starts.values()} <= node_names
        assert all(0 <= start <= settings.window_end_seconds for _, start in run.starts.values())
    report = compare(pods, nodes, settings, observed, seeds=(0, 1))
    for policy in policies:
        row = report["policies"][str(policy)]
        assert row["real"]["placed"] == len(pods)
        assert row["real"]["scaleInWattHours"] > 0
        assert row["simulated"]["scaleInWattHours"] > 0
        assert row["scaleInDifference"] == pytest.approx(
            row["real"]["scaleInWattHours"] / row["simulated"]["scaleInWattHours"] - 1
        )
        # the autoscaler on the real cluster powered nodes, and only those ran pods
        powered = {node for node, _, _ in observed[policy].power_intervals}
        assert {node for node, _ in observed[policy].starts.values()} <= powered
        assert row["real"]["nodesAdded"] >= 1
        assert abs(row["scaleInDifference"]) <= BAR_ENERGY_AGREEMENT, (policy, row)
    verdict = report["verdict"]["scaleIn"]
    assert set(verdict["realRanking"]) == {str(p) for p in policies}
    assert verdict["withinBar"] and verdict["sameRanking"], verdict
