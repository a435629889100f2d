"""The simulator: placement per policy, energy arithmetic, scale-in, determinism, shared scorer."""

from __future__ import annotations

import pytest
from lepton_scheduler import app as scheduler_app

from lepton.core import scoring
from lepton.core.energy import host_idle_watts
from lepton.core.profiles import get_profile
from lepton.sim import PolicyName, SimConfig, TraceNode, TracePod, simulate
from lepton.sim import policies as sim_policies
from lepton.sim.policies import num_feasible_nodes_to_find
from lepton.sim.trace import TraceError, sample_nodes, scale_arrivals, workload_kind

A40 = get_profile("A40")
A40_DYNAMIC_WATTS = A40.busy_power_at(None) - A40.idle_watts
A40_NODE_IDLE_WATTS = host_idle_watts(1) + A40.idle_watts  # one-GPU node
GRACE = 600.0
DELAY = 300.0


def pod(
    name: str,
    start: float,
    end: float,
    *,
    gpus: int = 1,
    milli: int = 1000,
    cpu: int = 4000,
    spec: tuple[str, ...] = (),
    qos: str = "BE",
) -> TracePod:
    return TracePod(name, cpu, 16_384, gpus, milli if gpus else 0, spec, start, start, end, qos)


def node(name: str, model: str = "A40", gpus: int = 1, cpu: int = 64_000) -> TraceNode:
    return TraceNode(name, cpu, 262_144, gpus, model)


def config(**kw: object) -> SimConfig:
    kw.setdefault("trace_speed", 1.0)  # trace durations are A40 durations
    kw.setdefault("scale_in_grace_seconds", GRACE)
    kw.setdefault("provisioning_delay_seconds", DELAY)
    kw.setdefault("window", "run")
    return SimConfig(**kw)  # type: ignore[arg-type]


def nodes_of(result: object) -> dict[str, str]:
    return {p.pod: p.node for p in result.placements}  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- energy


def test_always_on_one_pod_costs_the_fleet_idle_plus_its_active_power() -> None:
    cfg = config(regime="always_on")
    result = simulate(
        [pod("p", 0, 3600)], [node("n"), node("m")], PolicyName.DEFAULT_SCHEDULER, cfg
    )
    m = result.metrics()
    assert m["dynamicKWh"] == pytest.approx(A40_DYNAMIC_WATTS * 3600 / 3.6e6)
    assert m["idleKWh"] == pytest.approx(2 * A40_NODE_IDLE_WATTS * 3600 / 3.6e6)
    assert m["nodeHoursPowered"] == pytest.approx(2.0)
    assert m["meanBatchCompletionSeconds"] == pytest.approx(3600)  # no provisioning wait


def test_a_shared_gpu_batch_pod_draws_its_share_of_active_power() -> None:
    cfg = config(regime="always_on")
    result = simulate(
        [pod("p", 0, 3600, milli=250)], [node("n")], PolicyName.DEFAULT_SCHEDULER, cfg
    )
    assert result.dynamic_joules == pytest.approx(0.25 * A40_DYNAMIC_WATTS * 3600)


def test_the_window_clips_idle_but_charges_the_windows_batch_work_to_completion() -> None:
    pods = [pod("a", 0, 7200), pod("b", 3600, 3700)]
    cfg = config(regime="always_on", window="arrivals")
    m = simulate(pods, [node("n")], PolicyName.DEFAULT_SCHEDULER, cfg).metrics()
    assert m["windowHours"] == pytest.approx(1.0)  # to the last arrival
    assert m["idleKWh"] == pytest.approx(A40_NODE_IDLE_WATTS * 3600 / 3.6e6)
    # both batch pods arrived in the window: each is charged its whole run (7,200 s + 100 s),
    # so a policy that pushes work past the window's end saves nothing by it
    assert m["dynamicKWh"] == pytest.approx(A40_DYNAMIC_WATTS * 7300 / 3.6e6)
    assert m["batchDynamicKWh"] == pytest.approx(m["dynamicKWh"])
    # the clipped figure counts only the first hour of "a"
    assert m["energyKWhClipped"] == pytest.approx(
        (A40_NODE_IDLE_WATTS + A40_DYNAMIC_WATTS) * 3600 / 3.6e6
    )


def test_a_batch_pod_that_arrived_before_the_window_is_not_charged_to_it() -> None:
    pods = [pod("warm", 0, 7200)] + [pod(f"p{i}", 3600 + i, 3700 + i) for i in range(9)]
    cfg = config(regime="always_on", window="arrivals", warmup_fraction=0.1)
    m = simulate(pods, [node("n", gpus=8)], PolicyName.DEFAULT_SCHEDULER, cfg).metrics()
    assert m["batchDynamicKWh"] == pytest.approx(9 * A40_DYNAMIC_WATTS * 100 / 3.6e6)


# --------------------------------------------------------------------------- autoscaler


def test_the_autoscaler_adds_a_node_after_the_provisioning_delay() -> None:
    result = simulate([pod("p", 0, 3600)], [node("n")], PolicyName.DEFAULT_SCHEDULER, config())
    placed = result.placements[0]
    assert placed.start_seconds == pytest.approx(DELAY)
    m = result.metrics()
    assert m["nodesAdded"] == 1
    # up from its request until the grace period after its pod left
    assert m["nodeHoursPowered"] == pytest.approx((DELAY + 3600 + GRACE) / 3600)
    assert m["meanQueueingSeconds"] == pytest.approx(DELAY)


def test_only_powered_nodes_are_candidates_so_the_default_scheduler_packs_when_it_can() -> None:
    # LeastAllocated would spread p2 to the empty node, but that node is off
    pods = [pod("p1", 0, 5000), pod("p2", 1000, 5000)]
    nodes = [node("a", gpus=4), node("b", gpus=4)]
    result = simulate(pods, nodes, PolicyName.DEFAULT_SCHEDULER, config())
    assert len(set(nodes_of(result).values())) == 1
    assert result.metrics()["nodesAdded"] == 1
    # always on, the same scheduler spreads them
    spread = simulate(pods, nodes, PolicyName.DEFAULT_SCHEDULER, config(regime="always_on"))
    assert len(set(nodes_of(spread).values())) == 2


def test_pods_pending_together_count_on_the_node_being_added() -> None:
    pods = [pod("p1", 0, 5000), pod("p2", 10, 5000)]
    result = simulate(
        pods, [node("a", gpus=4), node("b", gpus=4)], PolicyName.MOST_ALLOCATED, config()
    )
    assert result.metrics()["nodesAdded"] == 1
    assert {p.start_seconds for p in result.placements} == {DELAY}


def test_the_least_waste_expander_adds_the_smallest_fitting_node() -> None:
    nodes = [node("big", gpus=8, cpu=128_000), node("small", gpus=1, cpu=8000)]
    result = simulate([pod("p", 0, 100)], nodes, PolicyName.DEFAULT_SCHEDULER, config())
    assert nodes_of(result)["p"] == "small"
    eight = simulate([pod("p", 0, 100, gpus=8)], nodes, PolicyName.DEFAULT_SCHEDULER, config())
    assert nodes_of(eight)["p"] == "big"


def test_an_empty_node_is_removed_after_the_grace_period_and_added_again_later() -> None:
    pods = [pod("p1", 0, 3600), pod("p2", 3600 + 3 * GRACE, 3600 + 3 * GRACE + 100)]
    result = simulate(pods, [node("n")], PolicyName.DEFAULT_SCHEDULER, config())
    m = result.metrics()
    assert m["nodesAdded"] == 2
    assert m["nodeHoursPowered"] == pytest.approx((2 * DELAY + 3600 + 100 + 2 * GRACE) / 3600)


def test_a_node_stays_up_when_the_next_pod_comes_within_the_grace_period() -> None:
    pods = [pod("p1", 0, 3600), pod("p2", 3600 + DELAY + GRACE / 2, 8000)]
    result = simulate(pods, [node("n", cpu=4000)], PolicyName.DEFAULT_SCHEDULER, config())
    assert result.metrics()["nodesAdded"] == 1
    second = next(p for p in result.placements if p.pod == "p2")
    assert second.start_seconds == pytest.approx(3600 + DELAY + GRACE / 2)  # no wait


# --------------------------------------------------------------------------- kinds


def test_trace_qos_classes_map_to_workload_kinds_and_unknown_ones_say_how_to_fix() -> None:
    assert workload_kind(pod("a", 0, 1, qos="LS")) == "Service"
    assert workload_kind(pod("a", 0, 1, qos="Burstable")) == "Service"
    assert workload_kind(pod("a", 0, 1, qos="BE")) == "Batch"
    assert workload_kind(pod("a", 0, 1, qos="BE"), {"BE": "Service"}) == "Service"
    with pytest.raises(TraceError, match="--kind Weird=Service"):
        workload_kind(pod("a", 0, 1, qos="Weird"))


def test_a_service_keeps_its_lifetime_on_a_faster_gpu_while_batch_finishes_sooner() -> None:
    h100 = [node("n", "H100")]
    cfg = config(regime="always_on")
    service = simulate([pod("s", 0, 3600, qos="LS")], h100, PolicyName.DEFAULT_SCHEDULER, cfg)
    batch = simulate([pod("b", 0, 3600)], h100, PolicyName.DEFAULT_SCHEDULER, cfg)
    assert service.placements[0].end_seconds == pytest.approx(3600)
    assert batch.placements[0].end_seconds == pytest.approx(
        3600 / get_profile("H100").speed_at(None)
    )


def test_a_service_draws_active_power_for_its_load_only() -> None:
    cfg = config(regime="always_on", service_reference_utilization_percent=30.0)
    result = simulate([pod("s", 0, 3600, qos="LS")], [node("n")], PolicyName.DEFAULT_SCHEDULER, cfg)
    placed = result.placements[0]
    assert placed.utilization == pytest.approx(0.3)
    assert result.dynamic_joules == pytest.approx(0.3 * A40_DYNAMIC_WATTS * 3600)
    assert not placed.above_target


def test_a_service_on_a_gpu_too_slow_for_its_load_is_counted_above_target() -> None:
    cfg = config(regime="always_on", service_reference_utilization_percent=50.0)
    result = simulate(
        [pod("s", 0, 3600, qos="LS")], [node("n", "T4")], PolicyName.DEFAULT_SCHEDULER, cfg
    )
    assert result.placements[0].above_target
    assert result.metrics()["servicesAboveTarget"] == 1


def test_lepton_filters_out_a_gpu_too_slow_for_a_service_and_keeps_it_on_a_fast_one() -> None:
    cfg = config(regime="always_on", service_reference_utilization_percent=50.0)
    nodes = [node("t4", "T4", cpu=128_000), node("a100", "A100", cpu=8000)]
    result = simulate([pod("s", 0, 3600, qos="LS")], nodes, PolicyName.LEPTON_EFFICIENCY, cfg)
    assert nodes_of(result)["s"] == "a100"
    assert result.metrics()["servicesAboveTarget"] == 0


def test_lepton_puts_a_light_service_on_a_small_gpu_rather_than_an_h100() -> None:
    cfg = config(regime="always_on", service_reference_utilization_percent=10.0)
    nodes = [node("h100", "H100", cpu=128_000), node("t4", "T4", cpu=8000)]
    result = simulate([pod("s", 0, 3600, qos="LS")], nodes, PolicyName.LEPTON_EFFICIENCY, cfg)
    assert nodes_of(result)["s"] == "t4"


def test_lepton_places_a_cpu_only_pod_by_bin_packing_without_scoring_it_as_a_gpu_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    original = scoring.score_nodes
    monkeypatch.setattr(
        scoring, "score_nodes", lambda *a, **k: calls.append(a[1].job_name) or original(*a, **k)
    )
    pods = [pod("g", 0, 5000), pod("c", 10, 5000, gpus=0)]
    nodes = [node("a", gpus=4), node("b", gpus=4)]
    result = simulate(pods, nodes, PolicyName.LEPTON_EFFICIENCY, config(regime="always_on"))
    assert calls == ["g"]
    assert nodes_of(result)["c"] == nodes_of(result)["g"]  # MostAllocated packs it


def test_lepton_breaks_its_score_ties_by_most_allocated() -> None:
    # two identical busy nodes: the Lepton scheduler ties them, MostAllocated picks the fuller
    pods = [pod("x", 0, 9000, cpu=32_000), pod("y", 1, 9000, cpu=4000), pod("z", 2, 9000)]
    nodes = [node("a", gpus=4), node("b", gpus=4)]
    cfg = config(regime="always_on")
    policy_placed = nodes_of(simulate(pods, nodes, PolicyName.LEPTON_EFFICIENCY, cfg))
    assert policy_placed["z"] == policy_placed["x"]


# --------------------------------------------------------------------------- placement


def test_default_scheduler_prefers_the_node_with_most_free_cpu_and_memory() -> None:
    nodes = [node("small", cpu=16_000), node("big", cpu=128_000)]
    cfg = config(regime="always_on")
    placed = nodes_of(simulate([pod("p", 0, 100)], nodes, PolicyName.DEFAULT_SCHEDULER, cfg))
    assert placed["p"] == "big"


def test_most_allocated_packs_pods_onto_the_busiest_node() -> None:
    pods = [pod("p1", 0, 100), pod("p2", 1, 100), pod("p3", 2, 100)]
    cfg = config(regime="always_on")
    placed = nodes_of(
        simulate(pods, [node("a", gpus=4), node("b", gpus=4)], PolicyName.MOST_ALLOCATED, cfg)
    )
    assert len(set(placed.values())) == 1


def test_capped_baselines_run_gpus_at_the_auto_limit_and_pay_in_time() -> None:
    cfg = config(regime="always_on")
    capped = simulate([pod("p", 0, 3600)], [node("n")], PolicyName.MOST_ALLOCATED_CAPPED, cfg)
    plain = simulate([pod("p", 0, 3600)], [node("n")], PolicyName.MOST_ALLOCATED, cfg)
    limit = A40.energy_optimal_power_limit_watts
    assert capped.placements[0].end_seconds == pytest.approx(3600 / A40.speed_at(limit))
    assert capped.dynamic_joules < plain.dynamic_joules


def test_gpu_spec_restricts_the_models_a_pod_may_use() -> None:
    nodes = [node("t4", "T4", cpu=128_000), node("v100", "V100M32", cpu=8000)]
    for policy in PolicyName:
        for regime in ("scale_in", "always_on"):
            result = simulate(
                [pod("p", 0, 100, spec=("V100M32",))], nodes, policy, config(regime=regime)
            )
            assert nodes_of(result)["p"] == "v100", (policy, regime)


def test_a_pod_waits_in_the_queue_until_a_gpu_is_free() -> None:
    pods = [pod("first", 0, 1000), pod("second", 10, 1010)]
    cfg = config(regime="always_on")
    result = simulate(pods, [node("n")], PolicyName.DEFAULT_SCHEDULER, cfg)
    second = next(p for p in result.placements if p.pod == "second")
    assert second.start_seconds == pytest.approx(1000)


def test_a_pod_that_never_fits_is_reported_unscheduled() -> None:
    for regime in ("scale_in", "always_on"):
        cfg = config(regime=regime)
        result = simulate(
            [pod("huge", 0, 10, gpus=8)], [node("n")], PolicyName.DEFAULT_SCHEDULER, cfg
        )
        assert result.unscheduled == ["huge"]


def test_kube_scheduler_scores_a_percentage_of_large_clusters_like_upstream() -> None:
    assert num_feasible_nodes_to_find(50, 0) == 50
    assert num_feasible_nodes_to_find(1213, 0) == 1213 * (50 - 1213 // 125) // 100
    assert num_feasible_nodes_to_find(5000, 0) == 5000 * 10 // 100
    assert num_feasible_nodes_to_find(200, 100) == 200


# --------------------------------------------------------------------------- trace transforms


def test_scaling_arrivals_keeps_every_lifetime() -> None:
    pods = [pod("a", 100, 500), pod("b", 300, 1000)]
    scaled = scale_arrivals(pods, 0.5)
    assert [p.creation_seconds for p in scaled] == [100, 200]
    assert [p.trace_run_seconds for p in scaled] == [400, 700]
    with pytest.raises(ValueError, match="positive"):
        scale_arrivals(pods, 0)


def test_a_seeded_fleet_sample_keeps_the_model_mix_and_differs_by_seed() -> None:
    fleet = [node(f"g{i}", "G2", gpus=8) for i in range(60)] + [
        node(f"t{i}", "T4", gpus=2) for i in range(40)
    ]
    first = sample_nodes(fleet, 10, seed=0)
    assert sum(n.model == "G2" for n in first) == 6
    assert sample_nodes(fleet, 10, seed=0) == first
    assert any(sample_nodes(fleet, 10, seed=s) != first for s in range(1, 5))


# --------------------------------------------------------------------------- determinism


def _trace() -> tuple[list[TracePod], list[TraceNode]]:
    pods = [
        pod(f"p{i}", i * 50.0, i * 50.0 + 400 + 37 * (i % 7), qos=("LS", "BE")[i % 2])
        for i in range(60)
    ]
    nodes = [node(f"n{i}", ("A40", "T4", "H100")[i % 3], gpus=4) for i in range(12)]
    return pods, nodes


@pytest.mark.parametrize("policy", list(PolicyName))
@pytest.mark.parametrize("regime", ["scale_in", "always_on"])
def test_same_seed_gives_the_same_result(policy: PolicyName, regime: str) -> None:
    pods, nodes = _trace()
    first = simulate(pods, nodes, policy, SimConfig(seed=7, regime=regime))
    second = simulate(pods, nodes, policy, SimConfig(seed=7, regime=regime))
    assert first.placements == second.placements
    drop = {"wallSeconds"}
    assert {k: v for k, v in first.metrics().items() if k not in drop} == {
        k: v for k, v in second.metrics().items() if k not in drop
    }


def test_a_different_seed_can_break_ties_differently() -> None:
    pods, nodes = _trace()
    runs = {
        tuple(
            p.node
            for p in simulate(
                pods, nodes, PolicyName.DEFAULT_SCHEDULER, SimConfig(seed=s, regime="always_on")
            ).placements
        )
        for s in range(4)
    }
    assert len(runs) > 1


# --------------------------------------------------------------------------- shared scorer


def test_simulator_scores_with_the_schedulers_own_functions() -> None:
    filter_nodes, score_nodes = sim_policies.shared_scorer()
    assert score_nodes is vars(scheduler_app)["score_nodes"]
    assert filter_nodes is vars(scheduler_app)["filter_nodes"]


def test_every_lepton_placement_goes_through_the_shared_score_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    original = scoring.score_nodes

    def spy(*args: object, **kw: object) -> scoring.ScoreResult:
        calls.append(args[1].job_name)  # type: ignore[attr-defined]
        return original(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(scoring, "score_nodes", spy)
    pods, nodes = _trace()
    simulate(pods, nodes, PolicyName.LEPTON_EFFICIENCY, SimConfig(regime="always_on"))
    assert calls == [p.name for p in pods]
