"""The simulator: placement per policy, energy arithmetic, scale-in, determinism, shared scorer."""

from __future__ import annotations

import pytest
from lepton_scheduler import app as extender_app

from lepton.core import scoring
from lepton.core.energy import host_idle_watts
from lepton.core.profiles import get_profile
from lepton.sim import PolicyName, SimConfig, TraceNode, TracePod, simulate
from lepton.sim import policies as sim_policies
from lepton.sim.policies import num_feasible_nodes_to_find

A40 = get_profile("A40")
A40_DYNAMIC_WATTS = A40.busy_power_at(None) - A40.idle_watts
A40_NODE_IDLE_WATTS = host_idle_watts(1) + A40.idle_watts  # one-GPU node
GRACE = 600.0


def pod(
    name: str,
    start: float,
    end: float,
    *,
    gpus: int = 1,
    milli: int = 1000,
    cpu: int = 4000,
    spec: tuple[str, ...] = (),
) -> TracePod:
    return TracePod(name, cpu, 16_384, gpus, milli if gpus else 0, spec, start, start, end)


def node(name: str, model: str = "A40", gpus: int = 1, cpu: int = 64_000) -> TraceNode:
    return TraceNode(name, cpu, 262_144, gpus, model)


def config(**kw: object) -> SimConfig:
    kw.setdefault("trace_speed", 1.0)  # trace durations are A40 durations
    kw.setdefault("scale_in_grace_seconds", GRACE)
    return SimConfig(**kw)  # type: ignore[arg-type]


def nodes_of(result: object) -> dict[str, str]:
    return {p.pod: p.node for p in result.placements}  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- energy


def test_one_pod_on_one_node_costs_idle_plus_active_power_for_its_runtime() -> None:
    result = simulate([pod("p", 0, 3600)], [node("n")], PolicyName.DEFAULT_SCHEDULER, config())
    m = result.metrics()
    assert result.dynamic_joules == pytest.approx(A40_DYNAMIC_WATTS * 3600)
    always_on = m["regimes"]["always_on"]
    assert always_on["idleKWh"] == pytest.approx(A40_NODE_IDLE_WATTS * 3600 / 3.6e6)
    assert always_on["energyKWh"] == pytest.approx(
        (A40_NODE_IDLE_WATTS + A40_DYNAMIC_WATTS) * 3600 / 3.6e6
    )
    # the unit of work: one GPU-hour
    assert always_on["whPerGpuHour"] == pytest.approx(A40_NODE_IDLE_WATTS + A40_DYNAMIC_WATTS)
    assert m["meanJobCompletionSeconds"] == pytest.approx(3600)


def test_always_on_pays_every_node_while_scale_in_pays_only_woken_nodes() -> None:
    nodes = [node("a"), node("b"), node("c")]
    result = simulate([pod("p", 0, 3600)], nodes, PolicyName.DEFAULT_SCHEDULER, config())
    regimes = result.metrics()["regimes"]
    assert regimes["always_on"]["nodeHoursPowered"] == pytest.approx(3.0)
    assert regimes["scale_in"]["nodeHoursPowered"] == pytest.approx(1.0)  # grace clipped
    assert regimes["always_on"]["idleKWh"] == pytest.approx(3 * regimes["scale_in"]["idleKWh"])


def test_a_shared_gpu_pod_draws_its_share_of_active_power() -> None:
    result = simulate(
        [pod("p", 0, 3600, milli=250)], [node("n")], PolicyName.DEFAULT_SCHEDULER, config()
    )
    assert result.dynamic_joules == pytest.approx(0.25 * A40_DYNAMIC_WATTS * 3600)
    assert result.work_gpu_hours == pytest.approx(0.25)


def test_always_on_idle_is_charged_over_the_common_window() -> None:
    result = simulate([pod("p", 0, 3600)], [node("n")], PolicyName.DEFAULT_SCHEDULER, config())
    longer = result.metrics(common_horizon_seconds=7200)["regimes"]["always_on"]
    assert longer["idleKWh"] == pytest.approx(A40_NODE_IDLE_WATTS * 7200 / 3.6e6)


# --------------------------------------------------------------------------- scale-in


def test_node_stays_powered_when_the_next_pod_comes_within_the_grace_period() -> None:
    pods = [pod("p1", 0, 3600), pod("p2", 3600 + GRACE / 2, 7200), pod("end", 20_000, 20_001)]
    nodes = [node("n", cpu=4000)]  # one pod at a time
    result = simulate(pods, nodes, PolicyName.DEFAULT_SCHEDULER, config())
    # on from 0 until 7200 + grace, then woken again for the last pod (clipped at its end)
    assert result.node_seconds_scale_in == pytest.approx(7200 + GRACE + 1)


def test_empty_node_is_scaled_in_after_the_grace_period() -> None:
    pods = [pod("p1", 0, 3600), pod("p2", 3600 + 3 * GRACE, 3600 + 3 * GRACE + 100)]
    result = simulate(pods, [node("n")], PolicyName.DEFAULT_SCHEDULER, config())
    assert result.node_seconds_scale_in == pytest.approx(3600 + GRACE + 100)
    powered_hours = result.metrics()["regimes"]["scale_in"]["nodeHoursPowered"]
    assert powered_hours < result.horizon_seconds / 3600


# --------------------------------------------------------------------------- placement


def test_default_scheduler_spreads_pods_over_the_least_allocated_nodes() -> None:
    pods = [pod("p1", 0, 100), pod("p2", 1, 100)]
    placed = nodes_of(
        simulate(pods, [node("a", gpus=4), node("b", gpus=4)], PolicyName.DEFAULT_SCHEDULER)
    )
    assert placed["p1"] != placed["p2"]


def test_default_scheduler_prefers_the_node_with_most_free_cpu_and_memory() -> None:
    nodes = [node("small", cpu=16_000), node("big", cpu=128_000)]
    placed = nodes_of(simulate([pod("p", 0, 100)], nodes, PolicyName.DEFAULT_SCHEDULER, config()))
    assert placed["p"] == "big"


def test_most_allocated_packs_pods_onto_the_busiest_node() -> None:
    pods = [pod("p1", 0, 100), pod("p2", 1, 100), pod("p3", 2, 100)]
    placed = nodes_of(
        simulate(pods, [node("a", gpus=4), node("b", gpus=4)], PolicyName.MOST_ALLOCATED)
    )
    assert len(set(placed.values())) == 1


@pytest.mark.parametrize("policy", [PolicyName.LEPTON_BALANCED, PolicyName.LEPTON_EFFICIENCY])
def test_lepton_consolidates_because_waking_an_empty_node_costs_idle_energy(
    policy: PolicyName,
) -> None:
    pods = [pod("p1", 0, 3600), pod("p2", 1, 3600)]
    placed = nodes_of(simulate(pods, [node("a", gpus=4), node("b", gpus=4)], policy, config()))
    assert placed["p1"] == placed["p2"]


def test_lepton_efficiency_picks_the_gpu_with_least_energy_to_completion() -> None:
    nodes = [node("p100", "P100", cpu=128_000), node("h100", "H100", cpu=16_000)]
    result = simulate([pod("p", 0, 3600)], nodes, PolicyName.LEPTON_EFFICIENCY, config())
    assert nodes_of(result)["p"] == "h100"
    # the default scheduler, blind to GPUs, takes the host with more free CPU
    default = simulate([pod("p", 0, 3600)], nodes, PolicyName.DEFAULT_SCHEDULER, config())
    assert nodes_of(default)["p"] == "p100"


def test_lepton_runs_gpus_at_the_energy_optimal_power_limit_and_pays_in_time() -> None:
    lepton = simulate([pod("p", 0, 3600)], [node("n")], PolicyName.LEPTON_EFFICIENCY, config())
    default = simulate([pod("p", 0, 3600)], [node("n")], PolicyName.DEFAULT_SCHEDULER, config())
    limit = A40.energy_optimal_power_limit_watts
    run = lepton.placements[0].end_seconds - lepton.placements[0].start_seconds
    assert run == pytest.approx(3600 / A40.speed_at(limit))
    assert run > default.placements[0].end_seconds
    assert lepton.dynamic_joules < default.dynamic_joules


def test_a_faster_gpu_finishes_the_same_work_sooner() -> None:
    result = simulate(
        [pod("p", 0, 3600)], [node("n", "H100")], PolicyName.DEFAULT_SCHEDULER, config()
    )
    run = result.placements[0].end_seconds
    assert run == pytest.approx(3600 / get_profile("H100").speed_at(None))


def test_gpu_spec_restricts_the_models_a_pod_may_use() -> None:
    nodes = [node("t4", "T4", cpu=128_000), node("v100", "V100M32", cpu=8000)]
    for policy in PolicyName:
        placed = nodes_of(simulate([pod("p", 0, 100, spec=("V100M32",))], nodes, policy))
        assert placed["p"] == "v100", policy


def test_shared_gpu_pods_fit_together_on_one_gpu() -> None:
    pods = [pod("a", 0, 100, milli=500), pod("b", 1, 100, milli=500)]
    result = simulate(pods, [node("n")], PolicyName.DEFAULT_SCHEDULER, config())
    assert all(p.start_seconds < 2 for p in result.placements)


def test_a_pod_waits_in_the_queue_until_a_gpu_is_free() -> None:
    pods = [pod("first", 0, 1000), pod("second", 10, 1010)]
    result = simulate(pods, [node("n")], PolicyName.DEFAULT_SCHEDULER, config())
    second = next(p for p in result.placements if p.pod == "second")
    assert second.start_seconds == pytest.approx(1000)
    assert result.metrics()["meanQueueingSeconds"] == pytest.approx(990 / 2)


def test_a_pod_that_never_fits_is_reported_unscheduled() -> None:
    result = simulate([pod("huge", 0, 10, gpus=8)], [node("n")], PolicyName.DEFAULT_SCHEDULER)
    assert result.unscheduled == ["huge"]


def test_deadline_misses_count_pods_finishing_after_their_deadline() -> None:
    # trace durations at A40 speed; a P100 is far slower: 1.5x the runtime is missed
    result = simulate(
        [pod("p", 0, 3600)], [node("n", "P100")], PolicyName.DEFAULT_SCHEDULER, config()
    )
    assert result.metrics()["deadlineMisses"] == 1


def test_kube_scheduler_scores_a_percentage_of_large_clusters_like_upstream() -> None:
    assert num_feasible_nodes_to_find(50, 0) == 50
    assert num_feasible_nodes_to_find(1213, 0) == 1213 * (50 - 1213 // 125) // 100
    assert num_feasible_nodes_to_find(5000, 0) == 5000 * 10 // 100
    assert num_feasible_nodes_to_find(200, 100) == 200


# --------------------------------------------------------------------------- determinism


def _trace() -> tuple[list[TracePod], list[TraceNode]]:
    pods = [pod(f"p{i}", i * 50.0, i * 50.0 + 400 + 37 * (i % 7)) for i in range(60)]
    nodes = [node(f"n{i}", ("A40", "T4", "H100")[i % 3], gpus=4) for i in range(12)]
    return pods, nodes


@pytest.mark.parametrize("policy", list(PolicyName))
def test_same_seed_gives_the_same_result(policy: PolicyName) -> None:
    pods, nodes = _trace()
    first = simulate(pods, nodes, policy, SimConfig(seed=7))
    second = simulate(pods, nodes, policy, SimConfig(seed=7))
    assert first.placements == second.placements
    assert first.metrics()["regimes"] == second.metrics()["regimes"]


def test_a_different_seed_can_break_ties_differently() -> None:
    pods, nodes = _trace()
    runs = {
        tuple(
            p.node
            for p in simulate(
                pods, nodes, PolicyName.DEFAULT_SCHEDULER, SimConfig(seed=s)
            ).placements
        )
        for s in range(4)
    }
    assert len(runs) > 1


# --------------------------------------------------------------------------- shared scorer


def test_simulator_scores_with_the_extenders_own_functions() -> None:
    filter_nodes, score_nodes = sim_policies.shared_scorer()
    assert score_nodes is vars(extender_app)["score_nodes"]
    assert filter_nodes is vars(extender_app)["filter_nodes"]


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
    simulate(pods, nodes, PolicyName.LEPTON_EFFICIENCY)
    assert calls == [p.name for p in pods]
