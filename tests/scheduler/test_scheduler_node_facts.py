"""What the Lepton scheduler's cache reads from a node for the energy model: host idle and
physical GPUs."""

from __future__ import annotations

import pytest
from lepton_scheduler.cache import ClusterCache

from lepton.core.energy import node_idle_watts
from lepton.core.hints import JobHints, WorkloadKind
from lepton.core.names import LABEL_HOST_IDLE_WATTS
from lepton.core.profiles import get_profile
from lepton.core.scoring import filter_nodes, score_nodes
from tests.support.scheduler import node_json


def cache_of(*nodes: dict[str, object]) -> ClusterCache:
    cache = ClusterCache()
    cache.replace_nodes(list(nodes))
    cache.replace_pods([])
    return cache


def wake_watts(cache: ClusterCache, names: list[str]) -> dict[str, float]:
    table, _ = cache.table(names)
    hints = JobHints("infer", workload_kind=WorkloadKind.SERVICE, reference_utilization_percent=10)
    return {t.node: t.wake_watts for t in score_nodes(table, hints).explanation.nodes}


def test_the_host_idle_label_reaches_the_score() -> None:
    labelled = node_json("lean", "NVIDIA-L4", 8, "zone-a")
    labelled["metadata"]["labels"][LABEL_HOST_IDLE_WATTS] = "60"  # type: ignore[index]
    plain = node_json("plain", "NVIDIA-L4", 8, "zone-a")
    wake = wake_watts(cache_of(labelled, plain), ["lean", "plain"])
    l4 = get_profile("NVIDIA-L4")
    assert wake["lean"] == pytest.approx(60 + 8 * l4.idle_watts)
    assert wake["plain"] == pytest.approx(node_idle_watts(l4, 8))


def test_a_time_sliced_node_idles_as_its_physical_gpus() -> None:
    # Found in review: with time-slicing the device plugin advertises nvidia.com/gpu = GPUs x
    # replicas (GPU feature discovery labels nvidia.com/gpu.replicas=4 and the physical
    # nvidia.com/gpu.count=8), and the cache took the 32 advertised GPUs as 32 boards: the
    # node's idle draw was counted 4x (host slots and GPUs), so it looked dear to wake.
    sliced = node_json("t4-sliced", "Tesla-T4-SHARED", 8, "zone-a")
    sliced["metadata"]["labels"]["nvidia.com/gpu.replicas"] = "4"  # type: ignore[index]
    for key in ("capacity", "allocatable"):
        sliced["status"][key]["nvidia.com/gpu"] = "32"  # type: ignore[index]
    cache = cache_of(sliced)
    table, _ = cache.table(["t4-sliced"])
    assert int(table.free_gpus[0]) == 32  # what kube-scheduler counts: the replicas
    wake = wake_watts(cache, ["t4-sliced"])
    assert wake["t4-sliced"] == pytest.approx(node_idle_watts(get_profile("T4"), 8))


def test_a_pod_on_a_time_sliced_gpu_holds_its_replica_share() -> None:
    # Found in review: a pod asking for one nvidia.com/gpu on a node sliced 4 ways holds a
    # quarter of a board, but without a lepton.dev/gpu-milli annotation the scorer took it
    # for a whole GPU: it paid a whole board's idle draw and had the whole board's headroom.
    sliced = node_json("t4-sliced", "Tesla-T4-SHARED", 8, "zone-a")
    sliced["metadata"]["labels"]["nvidia.com/gpu.replicas"] = "4"  # type: ignore[index]
    for key in ("capacity", "allocatable"):
        sliced["status"][key]["nvidia.com/gpu"] = "32"  # type: ignore[index]
    cache = cache_of(sliced, node_json("t4", "Tesla-T4", 8, "zone-a"))
    table, _ = cache.table(["t4-sliced", "t4"])
    heavy = JobHints("infer", workload_kind=WorkloadKind.SERVICE, reference_utilization_percent=30)
    failed = filter_nodes(table, heavy).failed
    assert set(failed) == {"t4-sliced"}
    assert "(80% of its 0.25 GPU share)" in failed["t4-sliced"], failed
    light = JobHints("infer", workload_kind=WorkloadKind.SERVICE, reference_utilization_percent=5)
    held = {t.node: t.held_idle_watts for t in score_nodes(table, light).explanation.nodes}
    t4 = get_profile("T4")
    assert held == pytest.approx({"t4-sliced": 0.25 * t4.idle_watts, "t4": t4.idle_watts})
    # an annotation asking for less than a replica still counts
    tiny = JobHints(
        "infer", workload_kind=WorkloadKind.SERVICE, reference_utilization_percent=1, gpu_milli=100
    )
    held = {t.node: t.held_idle_watts for t in score_nodes(table, tiny).explanation.nodes}
    assert held == pytest.approx({"t4-sliced": 0.1 * t4.idle_watts, "t4": 0.1 * t4.idle_watts})
