"""Scoring: energy to completion, load, redundancy, deadline, policy and budget pressure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton.core.hints import EnergyPolicy, JobHints
from lepton.core.names import MAX_SCORE
from lepton.core.scoring import (
    CandidateNode,
    CandidateTable,
    FailureKind,
    filter_nodes,
    policy_weights,
    replicas_per_domain,
    score_nodes,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ZONE = "topology.kubernetes.io/zone"


def node(
    name: str,
    model: str = "A40",
    *,
    free: int = 8,
    total: int = 8,
    zone: str = "a",
    empty: bool = False,
    load: float = 0.0,
) -> CandidateNode:
    return CandidateNode(
        name=name,
        gpu_model=model,
        free_gpus=free,
        total_gpus=total,
        labels={ZONE: zone},
        empty=empty,
        predicted_utilization=load,
    )


def hints(**kw: object) -> JobHints:
    return JobHints(job_name="train", **kw)  # type: ignore[arg-type]


def best(result_scores: dict[str, int] | object) -> str:
    scores = dict(result_scores)  # type: ignore[call-overload]
    return max(sorted(scores), key=lambda n: scores[n])


def test_efficiency_job_prefers_the_model_with_least_energy_to_completion() -> None:
    nodes = [
        node("a40", "NVIDIA-A40"),
        node("h100", "NVIDIA-H100-80GB-HBM3"),
        node("p100", "Tesla-P100-PCIE-16GB"),
        node("v100", "Tesla-V100-SXM2-16GB"),
    ]
    result = score_nodes(nodes, hints(energy_policy=EnergyPolicy.EFFICIENCY), now=NOW)
    energies = {t.node: t.energy_watt_hours for t in result.explanation.nodes}
    assert best(result.scores) == min(energies, key=lambda n: energies[n])
    assert result.scores["p100"] < result.scores["a40"]


def test_scores_are_integers_between_0_and_10() -> None:
    nodes = [node(f"n{i}", m, load=i / 10) for i, m in enumerate(["A40", "T4", "L4", "H100", "X"])]
    result = score_nodes(nodes, hints(), now=NOW)
    assert set(result.scores) == {n.name for n in nodes}
    assert all(type(s) is int and 0 <= s <= MAX_SCORE for s in result.scores.values())


def test_waking_an_empty_node_costs_its_idle_energy_so_busy_nodes_win_ties() -> None:
    result = score_nodes([node("busy"), node("empty", empty=True)], hints(), now=NOW)
    terms = {t.node: t for t in result.explanation.nodes}
    assert terms["busy"].idle_watt_hours == 0
    assert terms["empty"].idle_watt_hours > 0
    assert result.scores["busy"] > result.scores["empty"]


def test_nodes_predicted_to_be_loaded_are_avoided() -> None:
    result = score_nodes([node("calm", load=0.2), node("hot", load=0.95)], hints(), now=NOW)
    assert result.scores["calm"] > result.scores["hot"]
    hot = next(t for t in result.explanation.nodes if t.node == "hot")
    assert hot.contention_slowdown > 1 and hot.load_factor < 1


def test_load_below_target_costs_nothing() -> None:
    result = score_nodes([node("a", load=0.1), node("b", load=0.6)], hints(), now=NOW)
    assert result.scores["a"] == result.scores["b"] == MAX_SCORE


def test_power_cap_auto_uses_the_energy_optimal_limit() -> None:
    auto = score_nodes([node("a")], hints(power_cap="Auto"), now=NOW).explanation.nodes[0]
    off = score_nodes([node("a")], hints(power_cap="None"), now=NOW).explanation.nodes[0]
    assert auto.power_limit_watts == 200.0 and off.power_limit_watts == 300.0
    assert auto.energy_watt_hours < off.energy_watt_hours
    assert auto.duration_seconds > off.duration_seconds


def test_policy_weights_and_budget_pressure_move_towards_energy() -> None:
    assert (
        policy_weights(EnergyPolicy.PERFORMANCE, 0.0)[1]
        > policy_weights(EnergyPolicy.BALANCED, 0.0)[1]
    )
    assert (
        policy_weights(EnergyPolicy.EFFICIENCY, 0.0)[0]
        > policy_weights(EnergyPolicy.BALANCED, 0.0)[0]
    )
    assert policy_weights(EnergyPolicy.PERFORMANCE, 1.0) == (1.0, 0.0)
    assert policy_weights(EnergyPolicy.BALANCED, float("nan")) == (0.5, 0.5)
    assert sum(policy_weights(EnergyPolicy.BALANCED, 0.3)) == pytest.approx(1.0)


def test_performance_job_takes_the_fast_gpu_even_when_a_slow_one_is_more_frugal() -> None:
    # L4 is frugal but slow; A100 is fast.
    nodes = [node("l4", "L4"), node("a100", "A100")]
    perf = score_nodes(nodes, hints(energy_policy=EnergyPolicy.PERFORMANCE), now=NOW)
    eff = score_nodes(nodes, hints(energy_policy=EnergyPolicy.EFFICIENCY), now=NOW)
    assert perf.scores["a100"] > perf.scores["l4"]
    assert eff.scores["l4"] > eff.scores["a100"]
    pressed = score_nodes(
        nodes, hints(energy_policy=EnergyPolicy.PERFORMANCE, budget_pressure=1.0), now=NOW
    )
    assert pressed.scores["l4"] > pressed.scores["a100"]


def test_filter_rejects_unacceptable_models_and_too_few_free_gpus_with_reasons() -> None:
    result = filter_nodes(
        [node("ok", "NVIDIA-A100-SXM4-80GB"), node("wrong", "T4"), node("full", "A100", free=1)],
        hints(gpu_models=("A100",), gpus_per_replica=2),
        now=NOW,
    )
    assert [n.name for n in result.passed] == ["ok"]
    assert "gpuModels" in result.failed["wrong"]
    assert "1 free GPUs" in result.failed["full"]
    # The kind is a value, not a word in the message: only the short node is resolvable.
    assert result.kinds == {"wrong": FailureKind.UNRESOLVABLE, "full": FailureKind.RESOLVABLE}
    assert result.failed_of(FailureKind.RESOLVABLE) == {"full": result.failed["full"]}


def test_redundancy_filter_caps_replicas_per_domain_counting_spares() -> None:
    nodes = [
        node("a1", zone="a"),
        node("b1", zone="b"),
        node("c1", zone="c"),
        CandidateNode("nozone", "A40", 8, 8, labels={}),
    ]
    h = hints(replicas=3, spares=1, spread_across=ZONE, max_replicas_per_domain=1)
    placed = replicas_per_domain(["a1", "b1"], {n.name: n.labels for n in nodes}, ZONE)
    result = filter_nodes(nodes, h, placed, now=NOW)
    assert [n.name for n in result.passed] == ["c1"]
    assert "maxReplicasPerDomain 1" in result.failed["a1"]
    assert "no topology.kubernetes.io/zone label" in result.failed["nozone"]


def test_three_replicas_spread_over_three_zones_when_placed_one_by_one() -> None:
    nodes = [node(f"{z}{i}", zone=z) for z in "abc" for i in range(3)]
    h = hints(replicas=3, spread_across=ZONE, max_replicas_per_domain=1)
    labels = {n.name: n.labels for n in nodes}
    placed_on: list[str] = []
    for _ in range(3):
        placed = replicas_per_domain(placed_on, labels, ZONE)
        passed = filter_nodes(nodes, h, placed, now=NOW).passed
        scores = score_nodes(passed, h, placed, now=NOW).scores
        placed_on.append(best(scores))
    assert sorted(labels[n][ZONE] for n in placed_on) == ["a", "b", "c"]


def test_spread_without_a_maximum_prefers_the_emptiest_domain() -> None:
    nodes = [node("a1", zone="a"), node("b1", zone="b")]
    result = score_nodes(nodes, hints(spread_across=ZONE), {"a": 2}, now=NOW)
    assert result.scores["b1"] > result.scores["a1"]


def test_deadline_only_fast_gpus_can_meet_filters_out_the_slow_ones() -> None:
    # 8 reference GPU-hours on one GPU: the A40 needs ~8.4 h at 200 W, the H100 ~1.5 h.
    h = hints(work_reference_gpu_hours=8.0, deadline_time=NOW + timedelta(hours=3))
    nodes = [node("a40", "A40"), node("h100", "H100"), node("t4", "T4")]
    result = filter_nodes(nodes, h, now=NOW)
    assert [n.name for n in result.passed] == ["h100"]
    assert "after the deadline" in result.failed["a40"]
    scored = score_nodes(nodes, h, now=NOW)
    assert scored.scores["a40"] == 0 and scored.scores["h100"] > 0


def test_when_no_node_can_meet_the_deadline_all_pass_ranked_by_completion_time() -> None:
    h = hints(
        work_reference_gpu_hours=100.0,
        energy_policy=EnergyPolicy.EFFICIENCY,
        deadline_time=NOW + timedelta(minutes=5),
    )
    nodes = [node("l4", "L4"), node("h100", "H100"), node("a40", "A40")]
    result = filter_nodes(nodes, h, now=NOW)
    assert len(result.passed) == 3 and result.notes
    scored = score_nodes(nodes, h, now=NOW)
    assert best(scored.scores) == "h100"
    assert scored.scores["l4"] < scored.scores["a40"] < scored.scores["h100"]


def test_naive_deadline_is_read_as_utc() -> None:
    h = hints(work_reference_gpu_hours=1.0, deadline_time=datetime(2026, 1, 1, 20, 0))
    assert len(filter_nodes([node("a")], h, now=NOW).passed) == 1


def test_explanation_lists_each_term_per_node_best_first() -> None:
    result = score_nodes([node("a", "T4"), node("b", "H100")], hints(), now=NOW)
    explained = result.explanation.as_dict()
    assert explained["nodes"][0]["node"] == "b"
    for key in (
        "energyWattHours",
        "dynamicWattHours",
        "idleWattHours",
        "durationSeconds",
        "predictedUtilization",
        "powerLimitWatts",
        "energyTerm",
        "timeTerm",
        "loadFactor",
        "spreadFactor",
        "score",
    ):
        assert key in explained["nodes"][0]
    assert result.explanation.top(1)[0].node == "b"


def test_unknown_gpu_model_and_bad_power_cap_never_raise() -> None:
    result = score_nodes(
        [node("x", "Mystery-GPU"), node("a", "A40")], hints(power_cap="lots"), now=NOW
    )
    assert result.scores["a"] > result.scores["x"]


def test_no_candidates_gives_no_scores() -> None:
    assert score_nodes([], hints(), now=NOW).scores == {}
    assert filter_nodes([], hints(), now=NOW).passed == ()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A40", "H100", "T4", "??", ""]),
            st.integers(0, 8),
            st.booleans(),
            st.floats(allow_nan=True),
            st.sampled_from(["a", "b"]),
        ),
        max_size=12,
    ),
    st.sampled_from(list(EnergyPolicy)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True),
    st.integers(-1, 8),
)
def test_scores_stay_in_range_for_any_input(rows, policy, work, pressure, gpus) -> None:  # type: ignore[no-untyped-def]
    nodes = [
        CandidateNode(f"n{i}", m, free, 8, {ZONE: z}, empty, load)
        for i, (m, free, empty, load, z) in enumerate(rows)
    ]
    h = hints(
        energy_policy=policy,
        work_reference_gpu_hours=work,
        budget_pressure=pressure,
        gpus_per_replica=gpus,
        spread_across=ZONE,
        max_replicas_per_domain=1,
        deadline_time=NOW + timedelta(hours=1),
    )
    filter_nodes(nodes, h, {"a": 1}, now=NOW)
    result = score_nodes(nodes, h, {"a": 1}, now=NOW)
    assert all(type(s) is int and 0 <= s <= MAX_SCORE for s in result.scores.values())


def test_a_table_and_a_list_of_the_same_nodes_score_alike() -> None:
    nodes = [
        node("a", "A40", load=0.9),
        node("b", "H100", empty=True, zone="b"),
        node("c", "T4", free=0),
        CandidateNode("d", "L4", 4, 4, labels={}),
    ]
    h = hints(spread_across=ZONE, gpu_models=("A40", "H100", "T4", "L4"))
    table = CandidateTable.from_nodes(nodes)
    assert (
        score_nodes(nodes, h, {"a": 1}, now=NOW).scores
        == score_nodes(table, h, {"a": 1}, now=NOW).scores
    )
    by_list = filter_nodes(nodes, h, now=NOW)
    by_table = filter_nodes(table, h, now=NOW)
    assert by_list.passed_names == by_table.passed_names == ["a", "b"]
    assert by_list.failed == by_table.failed
    assert list(table.take(np.array([2, 0]))) == [nodes[2], nodes[0]]
