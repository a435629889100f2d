"""The real replay's pure half: slicing, compression, whole GPUs, pods, the shared accounting."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from lepton.core.energy import node_idle_watts
from lepton.core.hints import hints_from_pod_metadata
from lepton.core.names import (
    ANNOTATION_DEADLINE_TIME,
    ANNOTATION_ENERGY_POLICY,
    ANNOTATION_WORK_GPU_HOURS,
    LABEL_JOB_NAME,
)
from lepton.core.profiles import get_profile
from lepton.sim import PolicyName, SimConfig, TraceNode, TracePod, simulate
from lepton.sim.energy_account import account_energy, account_powered, power_intervals
from lepton.sim.engine import Placement
from lepton.sim.replay import (
    MOST_ALLOCATED_SCHEDULER_NAME,
    REPLAY_KIND_MAP,
    ObservedRun,
    ReplayAutoscaler,
    ReplayConfig,
    ReplayError,
    compare,
    compression_for,
    peak_arrivals_per_second,
    placement_for,
    pod_manifest,
    ranking,
    relative_difference,
    same_ranking,
    trace_slice,
    whole_gpu_pods,
    with_scheduling_lag,
)

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def pod(
    name: str, start: float, end: float, *, gpus: int = 1, milli: int = 1000, cpu: int = 4000
) -> TracePod:
    return TracePod(name, cpu, 16_384, gpus, milli if gpus else 0, (), start, start, end)


def node(name: str, model: str = "A40", gpus: int = 4) -> TraceNode:
    return TraceNode(name, 64_000, 262_144, gpus, model)


def random_trace(seed: int, count: int = 60) -> list[TracePod]:
    rng = random.Random(seed)
    pods = []
    for i in range(count):
        start = rng.uniform(0, 20_000)
        gpus = rng.choice([0, 1, 1, 1, 2])
        milli = rng.choice([1000, 1000, 500, 250]) if gpus == 1 else 1000
        pods.append(pod(f"p{i:03d}", start, start + rng.uniform(60, 8000), gpus=gpus, milli=milli))
    return sorted(pods, key=lambda p: p.creation_seconds)


FLEET = (
    [node(f"a40-{i}", "A40") for i in range(4)]
    + [node(f"g2-{i}", "G2", 8) for i in range(3)]
    + [node(f"t4-{i}", "T4", 4) for i in range(3)]
)


# --------------------------------------------------------------------------- slice and clock


def test_a_slice_is_timed_from_its_first_pod_and_keeps_creation_order() -> None:
    pods = [pod("A", 100, 400), pod("b", 250, 300), pod("c", 900, 1000)]
    sliced = trace_slice(pods, 1, 2)
    assert [p.name for p in sliced] == ["b", "c"]
    assert [p.creation_seconds for p in sliced] == [0, 650]
    assert sliced[1].deletion_seconds == 750
    assert trace_slice(pods, 0, 1)[0].name == "a"  # Kubernetes names are lower case


def test_a_slice_past_the_trace_end_says_how_to_fix_it() -> None:
    with pytest.raises(ReplayError, match="smaller first index"):
        trace_slice([pod("a", 0, 1)], 5, 10)


def test_compression_makes_arrivals_span_the_asked_replay_seconds() -> None:
    pods = [pod("a", 0, 10), pod("b", 3600, 4000), pod("c", 7200, 9000)]
    compression = compression_for(pods, 60.0)
    assert compression == pytest.approx(120.0)  # two hours of arrivals in one minute
    assert max(p.creation_seconds for p in pods) / compression == pytest.approx(60.0)


def test_peak_arrivals_counts_pods_within_one_compressed_second() -> None:
    pods = [pod(str(i), t, t + 1) for i, t in enumerate([0, 10, 20, 50, 1000, 1005])]
    assert peak_arrivals_per_second(pods, 25.0) == 3  # 0, 10, 20 s -> 0, 0.4, 0.8 s
    assert peak_arrivals_per_second(pods, 5.0) == 2  # 1000, 1005 s -> 200, 201 s


def test_the_grace_period_is_compressed_with_the_trace() -> None:
    settings = ReplayConfig(time_compression=100.0, window_end_seconds=60, model_map={})
    assert settings.compressed_grace_seconds == pytest.approx(6.0)
    assert settings.compressed_provisioning_delay_seconds == pytest.approx(3.0)
    config = settings.sim_config(trace_speed=2.0)
    # given on the trace's clock: the engine compresses them once (not twice)
    assert (config.scale_in_grace_seconds, config.provisioning_delay_seconds) == (600.0, 300.0)
    assert config.time_compression == 100.0
    assert config.deadline_factor == 0.0
    assert config.regime == "scale_in" and not config.forecast
    # one pod of 1,000 trace seconds (10 s compressed, 20 s on an A40 at half the
    # trace's speed): its node is requested at 0, ready 3 s later, removed 6 s after
    # it empties
    result = simulate([pod("a", 0, 1000)], [node("n")], PolicyName.DEFAULT_SCHEDULER, config)
    assert result.placements[0].start_seconds == pytest.approx(3.0)
    assert result.power_intervals[0][1:3] == pytest.approx((0.0, 3.0 + 20.0 + 6.0))


# --------------------------------------------------------------------------- whole GPUs


def test_a_pod_sharing_a_gpu_asks_for_the_whole_gpu() -> None:
    shared, whole, cpu_only = whole_gpu_pods(
        [pod("s", 0, 10, milli=460), pod("w", 0, 10, gpus=2), pod("c", 0, 10, gpus=0)]
    )
    assert (shared.num_gpu, shared.gpu_milli, shared.gpu_share) == (1, 1000, 1.0)
    assert (whole.num_gpu, whole.gpu_milli) == (2, 1000)
    assert (cpu_only.num_gpu, cpu_only.gpu_share) == (0, 0.0)


def test_the_manifest_refuses_a_fraction_of_a_gpu() -> None:
    config = SimConfig()
    with pytest.raises(ReplayError, match="whole_gpu_pods"):
        pod_manifest(
            pod("s", 0, 10, milli=300), PolicyName.DEFAULT_SCHEDULER, "ns", config, 1.0, EPOCH
        )


# --------------------------------------------------------------------------- manifests


def test_a_default_scheduler_pod_is_bare_and_asks_for_its_resources() -> None:
    manifest = pod_manifest(
        pod("p", 0, 10, gpus=2, cpu=1500),
        PolicyName.DEFAULT_SCHEDULER,
        "ns",
        SimConfig(),
        1.0,
        EPOCH,
    )
    spec = manifest["spec"]
    assert "schedulerName" not in spec
    assert spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert spec["containers"][0]["resources"]["requests"]["cpu"] == "1500m"
    assert LABEL_JOB_NAME not in manifest["metadata"]["labels"]


def test_a_lepton_pod_carries_the_hints_the_simulator_scores_with() -> None:
    config = SimConfig(time_compression=10.0, deadline_factor=1.5, trace_speed=2.0)
    trace_pod = pod("p", 100, 3700)  # one trace hour, 360 replay seconds
    manifest = pod_manifest(trace_pod, PolicyName.LEPTON_EFFICIENCY, "ns", config, 2.0, EPOCH)
    metadata = manifest["metadata"]
    assert manifest["spec"]["schedulerName"] == "lepton-scheduler"
    assert metadata["annotations"][ANNOTATION_ENERGY_POLICY] == "Efficiency"
    hints = hints_from_pod_metadata(metadata["labels"], metadata["annotations"])
    assert hints is not None and hints.job_name == "p"
    # work: 360 s at twice the A40's speed = 0.2 reference GPU-hours
    assert float(metadata["annotations"][ANNOTATION_WORK_GPU_HOURS]) == pytest.approx(0.2)
    # deadline on the replay's clock: creation 10 s + 1.5 x 360 s
    assert hints.deadline_time == EPOCH + timedelta(seconds=10 + 540)
    assert ANNOTATION_DEADLINE_TIME in metadata["annotations"]


def test_a_most_allocated_pod_names_the_bin_packing_scheduler_and_carries_no_hints() -> None:
    manifest = pod_manifest(
        pod("p", 0, 1), PolicyName.MOST_ALLOCATED, "ns", SimConfig(), 1.0, EPOCH
    )
    assert manifest["spec"]["schedulerName"] == MOST_ALLOCATED_SCHEDULER_NAME
    assert "annotations" not in manifest["metadata"]


def test_a_capped_baseline_has_no_real_scheduler_to_replay_with() -> None:
    with pytest.raises(ReplayError, match="choose one of"):
        pod_manifest(
            pod("p", 0, 1), PolicyName.MOST_ALLOCATED_CAPPED, "ns", SimConfig(), 1.0, EPOCH
        )


# --------------------------------------------------------------------------- same model


@pytest.mark.parametrize("policy", [PolicyName.DEFAULT_SCHEDULER, PolicyName.LEPTON_EFFICIENCY])
@pytest.mark.parametrize("seed", [1, 2])
def test_accounting_the_simulators_placements_gives_the_simulators_energy(
    policy: PolicyName, seed: int
) -> None:
    pods = random_trace(seed)
    config = SimConfig(
        trace_speed=1.5,
        scale_in_grace_seconds=300.0,
        seed=seed,
        regime="always_on",
        kind_map=REPLAY_KIND_MAP,
        window="run",
    )
    result = simulate(pods, FLEET, policy, config)
    idle = {
        n.name: node_idle_watts(get_profile(config.model_map.get(n.model, n.model)), n.gpus)
        for n in FLEET
    }
    account = account_energy(result.placements, idle, result.horizon_seconds, 300.0)
    assert account.dynamic_joules == pytest.approx(result.dynamic_joules, rel=1e-12)
    always_on = result.fleet_idle_watts * result.horizon_seconds
    assert account.idle_always_on_joules == pytest.approx(always_on, rel=1e-12)


@pytest.mark.parametrize("policy", [PolicyName.DEFAULT_SCHEDULER, PolicyName.LEPTON_BALANCED])
def test_a_placement_observed_where_the_simulator_put_it_is_the_simulators_placement(
    policy: PolicyName,
) -> None:
    pods = whole_gpu_pods(random_trace(3, 30))
    config = SimConfig(trace_speed=1.7, time_compression=20.0)
    by_name = {p.name: p for p in pods}
    for placed in simulate(pods, FLEET, policy, config).placements:
        again = placement_for(
            by_name[placed.pod],
            placed.node,
            placed.model,
            placed.start_seconds,
            policy,
            config,
            1.7,
        )
        assert again.end_seconds == pytest.approx(placed.end_seconds, rel=1e-12)
        assert again.dynamic_watts == pytest.approx(placed.dynamic_watts, rel=1e-12)
        assert again.gpu_share == placed.gpu_share


def test_a_node_idle_longer_than_the_grace_period_is_off_in_between() -> None:
    def at(node: str, start: float, end: float) -> Placement:
        return Placement("p", node, "A40", start, end, 1.0, 100.0)

    placements = [at("n", 0, 10), at("n", 5, 20), at("n", 25, 30), at("n", 100, 110)]
    assert power_intervals(placements, 10.0, 1000.0) == [("n", 0, 40), ("n", 100, 120)]
    # the window cuts runs and power alike
    account = account_energy(placements, {"n": 50.0, "idle-node": 30.0}, 105.0, 10.0)
    assert account.dynamic_joules == pytest.approx(100.0 * (10 + 15 + 5 + 5))
    assert account.node_seconds_scale_in == pytest.approx(40 + 5)
    assert account.idle_always_on_joules == pytest.approx(80.0 * 105)


# --------------------------------------------------------------------------- comparison


def test_rankings_ignore_pairs_the_simulator_calls_a_tie() -> None:
    simulated = {"default": 10.0, "balanced": 5.0, "efficiency": 5.02}
    assert ranking(simulated) == ["balanced", "efficiency", "default"]
    assert same_ranking({"default": 9.0, "balanced": 5.1, "efficiency": 5.0}, simulated, 0.01)
    assert not same_ranking({"default": 4.0, "balanced": 5.1, "efficiency": 5.0}, simulated, 0.01)
    assert relative_difference(10.5, 10.0) == pytest.approx(0.05)


def autoscale_like_the_replay(
    pods: list[TracePod], placements: list[Placement], settings: ReplayConfig
) -> ReplayAutoscaler:
    """Drive the replay's autoscaler with the simulator's placements, as the driver would."""
    autoscaler = ReplayAutoscaler(
        FLEET,
        settings.compressed_provisioning_delay_seconds,
        settings.compressed_grace_seconds,
        settings.seed,
    )
    by_name = {p.name: p for p in pods}
    start = {p.pod: p for p in placements}
    created = {p.name: p.creation_seconds / settings.time_compression for p in pods}
    times = sorted(
        set(created.values())
        | {p.start_seconds for p in placements}
        | {p.end_seconds for p in placements}
    )
    running: set[str] = set()
    while times:
        now = times.pop(0)
        for name in [n for n in running if start[n].end_seconds <= now]:
            running.discard(name)
            autoscaler.finished(by_name[name], now)
        starting = [n for n, p in start.items() if p.start_seconds == now]
        pending = [
            p
            for p in pods
            if created[p.name] <= now and p.name not in running and p.name not in starting
            if p.name not in start or start[p.name].start_seconds > now
        ]
        assert autoscaler.step(now, pending) is not None
        for name in starting:
            assert autoscaler.bound(by_name[name], start[name].node, now) == []
            running.add(name)
        deadline = autoscaler.next_deadline()
        if deadline < float("inf") and (not times or deadline < times[0]):
            times.insert(0, deadline)
    assert autoscaler.late_bindings == 0
    return autoscaler


@pytest.mark.parametrize("policy", [PolicyName.MOST_ALLOCATED, PolicyName.LEPTON_EFFICIENCY])
@pytest.mark.parametrize("seed", [4, 5])
def test_the_replays_autoscaler_powers_nodes_as_the_simulators(
    policy: PolicyName, seed: int
) -> None:
    pods = whole_gpu_pods(random_trace(seed, 40))
    settings = ReplayConfig(time_compression=50.0, window_end_seconds=500.0, model_map={})
    result = simulate(pods, FLEET, policy, settings.sim_config())
    autoscaler = autoscale_like_the_replay(pods, result.placements, settings)
    assert autoscaler.nodes_added == result.nodes_added > 1
    ours = sorted(autoscaler.close(result.horizon_seconds))
    theirs = sorted((n, a, b) for n, a, b, _ in result.power_intervals)
    assert [n for n, _, _ in ours] == [n for n, _, _ in theirs]
    assert [t for _, a, b in ours for t in (a, b)] == pytest.approx(
        [t for _, a, b in theirs for t in (a, b)]
    )


def test_a_replay_that_places_and_scales_as_the_simulator_agrees_with_it_exactly() -> None:
    pods = whole_gpu_pods(random_trace(4, 40))
    settings = ReplayConfig(time_compression=50.0, window_end_seconds=500.0, model_map={})
    config = settings.sim_config()
    observed = {}
    for policy in (PolicyName.DEFAULT_SCHEDULER, PolicyName.LEPTON_EFFICIENCY):
        result = simulate(pods, FLEET, policy, config)
        autoscaler = autoscale_like_the_replay(pods, result.placements, settings)
        observed[policy] = ObservedRun(
            policy=policy,
            starts={p.pod: (p.node, p.start_seconds) for p in result.placements},
            unscheduled=[],
            wall_seconds=1.0,
            power_intervals=autoscaler.close(result.horizon_seconds),
        )
    report = compare(pods, FLEET, settings, observed, seeds=(0,))
    for row in report["policies"].values():
        assert row["scaleInDifference"] == pytest.approx(0.0, abs=1e-12)
        assert row["dynamicDifference"] == pytest.approx(0.0, abs=1e-12)
        assert row["scaleInWithinSeedRange"]
    assert report["verdict"]["scaleIn"]["sameRanking"]
    assert report["verdict"]["scaleIn"]["withinBar"]
    assert report["kind"].endswith("not measurements")


def test_a_pod_bound_to_a_node_just_cordoned_powers_it_again() -> None:
    autoscaler = ReplayAutoscaler(FLEET, 1.0, 2.0)
    first = pod("a", 0, 10)
    assert autoscaler.step(0.0, [first]) == []  # requested: nothing to uncordon yet
    assert autoscaler.nodes_added == 1
    (node, schedulable), *_ = autoscaler.step(1.0, [first])
    assert schedulable and autoscaler.fits_powered(first)
    autoscaler.bound(first, node, 1.1)
    autoscaler.finished(first, 2.0)
    assert autoscaler.step(4.0, []) == [(node, False)]  # empty for the grace: cordoned
    assert not autoscaler.fits_powered(first)
    # the scheduler had already chosen it: the pod runs there, so the node is up again
    assert autoscaler.bound(pod("b", 0, 10), node, 4.01) == [(node, True)]
    assert autoscaler.late_bindings == 1
    assert autoscaler.close(5.0) == [(node, 0.0, 4.0), (node, 4.01, 5.0)]


def test_the_replays_latency_delays_each_pod_on_the_trace_clock_and_keeps_its_lifetime() -> None:
    settings = ReplayConfig(time_compression=100.0, window_end_seconds=60, model_map={})
    pods = [pod("a", 0, 1000), pod("b", 50, 80)]
    late = with_scheduling_lag(pods, [0.5], settings, seed=0)
    assert [p.creation_seconds for p in late] == [50.0, 100.0]  # 0.5 replay s = 50 trace s
    assert [p.trace_run_seconds for p in late] == [p.trace_run_seconds for p in pods]
    assert with_scheduling_lag(pods, [], settings, seed=0) == pods


def test_powered_spells_are_priced_at_idle_power_and_cut_at_the_window() -> None:
    placements = [Placement("p", "n", "A40", 1.0, 30.0, 1.0, 100.0)]
    account = account_powered(
        placements, [("n", 0.0, 12.0), ("m", 5.0, 8.0)], {"n": 50.0, "m": 20.0}, 10.0
    )
    assert account.dynamic_joules == pytest.approx(100.0 * 9)
    assert account.idle_scale_in_joules == pytest.approx(50.0 * 10 + 20.0 * 3)
    assert account.node_seconds_scale_in == pytest.approx(13.0)
    assert account.idle_always_on_joules == pytest.approx(70.0 * 10)
