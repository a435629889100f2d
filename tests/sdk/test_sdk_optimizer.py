"""The power-limit optimizer against a fake NVML that follows the measured A40 curve.

Every expected limit is computed here from the Zeus A40 sweep itself (least
energy per step among limits at most ``max_slowdown`` slower than the 300 W
default), never hard-coded, so the tests follow the data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton.hw.fake_nvml import (
    A40_DEFAULT_LIMIT_WATTS,
    FakeNvml,
    PowerCurve,
    a40_sweeps,
    curve_fleet,
    median_a40_curve,
    workload_curve,
)
from lepton.sdk import LeptonEngine, OptimizerConfig, OptimizeReport
from lepton.sdk.optimizer import (
    LimitMeasurement,
    PowerLimitOptimizer,
    candidate_power_limits,
    choose_power_limit,
)


def expected_limit(points: dict[float, tuple[float, float]], max_slowdown: float) -> float:
    """The limit the data imply: least time x power among limits within the slowdown."""
    base_seconds = points[A40_DEFAULT_LIMIT_WATTS][0]
    allowed = [
        limit
        for limit, (seconds, _) in points.items()
        if seconds <= base_seconds * (1 + max_slowdown) * (1 + 1e-12)
    ]
    return min(allowed, key=lambda limit: (points[limit][0] * points[limit][1], -limit))


def engine_over(fake: FakeNvml) -> LeptonEngine:
    return LeptonEngine(nvml=fake, clock=fake.clock, powercap_root=Path("/nonexistent"))


def train(
    curve: PowerCurve,
    max_slowdown: float = 0.05,
    steps: int = 2000,
    measured_limits: bool = False,
    min_window_seconds: float = 2.0,
) -> tuple[FakeNvml, LeptonEngine, OptimizeReport]:
    fake = curve_fleet(curve)
    engine = engine_over(fake)
    # Some workloads were swept at five limits only: profile exactly those, so the
    # fake never has to interpolate between measurements.
    limits = tuple(curve.limits_watts) if measured_limits else None
    settings = OptimizerConfig(
        max_slowdown=max_slowdown,
        power_limits_watts=limits,
        min_window_seconds=min_window_seconds,
    )
    report = engine.optimize(lambda _: fake.run_step(), steps, settings=settings)
    return fake, engine, report


def test_profiler_picks_the_limit_the_median_a40_curve_implies(shipped_data: Path) -> None:
    curve = median_a40_curve(shipped_data)
    fake, _, report = train(curve)
    want = expected_limit(curve.points, 0.05)

    assert report.tuned, report.reason
    assert report.chosen_power_limit_watts == want
    # The data say a lower limit saves energy at the A40's default of 300 W.
    assert want < A40_DEFAULT_LIMIT_WATTS
    assert report.energy_saved_fraction == pytest.approx(
        1 - curve.joules_per_step(want) / curve.joules_per_step(A40_DEFAULT_LIMIT_WATTS),
        rel=1e-4,
    )
    # Every A40 limit of the sweep was tried, highest first, then the chosen one kept.
    tried = [m.power_limit_watts for m in report.measurements]
    assert tried == sorted(curve.limits_watts, reverse=True)
    assert fake.gpus[0].limit_history_watts[len(tried)] == want


def test_profiler_picks_each_measured_workloads_own_limit(shipped_data: Path) -> None:
    sweeps = a40_sweeps(shipped_data)
    assert len(sweeps) > 40, "the A40 sweep should hold dozens of workloads"
    wrong = {}
    for name, run in sweeps.items():
        # Fixed 40-step windows (Zeus's), whatever each workload's step time.
        _, _, report = train(
            workload_curve(run), steps=1000, measured_limits=True, min_window_seconds=0.0
        )
        assert report.steps_at_chosen_limit > 0, f"{name}: profiling did not finish"
        want = expected_limit(run, 0.05)
        got = report.chosen_power_limit_watts
        if got != want:
            wrong[name] = (got, want)
    assert not wrong, f"chosen vs implied limit per workload: {wrong}"


@pytest.mark.parametrize("max_slowdown", [0.0, 0.02, 0.05, 0.10, 0.25, 1.0])
def test_chosen_limit_is_never_slower_than_the_allowed_slowdown(
    shipped_data: Path, max_slowdown: float
) -> None:
    curve = median_a40_curve(shipped_data)
    _, _, report = train(curve, max_slowdown=max_slowdown)
    chosen = report.chosen_power_limit_watts

    assert chosen == expected_limit(curve.points, max_slowdown)
    assert curve.seconds_per_step(chosen) <= curve.seconds_per_step(A40_DEFAULT_LIMIT_WATTS) * (
        1 + max_slowdown
    )
    assert report.slowdown_fraction <= max_slowdown + 1e-9
    assert report.energy_saved_fraction >= 0


def test_a_looser_slowdown_never_spends_more_energy(shipped_data: Path) -> None:
    curve = median_a40_curve(shipped_data)
    energies = [
        curve.joules_per_step(train(curve, max_slowdown=s)[2].chosen_power_limit_watts)
        for s in (0.0, 0.05, 0.5)
    ]
    assert energies == sorted(energies, reverse=True)
    assert energies[0] > energies[-1]


def test_gpu_limit_is_restored_after_training(shipped_data: Path) -> None:
    fake, _, report = train(median_a40_curve(shipped_data))
    assert report.tuned
    assert fake.gpus[0].limit_watts == A40_DEFAULT_LIMIT_WATTS
    assert report.steps_at_chosen_limit > 0
    assert report.projected_energy_saved_joules > 0


def test_limit_is_restored_when_the_training_step_raises(shipped_data: Path) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data))
    engine = engine_over(fake)

    def step(index: int) -> None:
        fake.run_step()
        if index == 300:
            raise RuntimeError("loss is NaN")

    with pytest.raises(RuntimeError, match="NaN"):
        engine.optimize(step, 2000)
    assert fake.gpus[0].limit_history_watts[-1] == A40_DEFAULT_LIMIT_WATTS
    assert fake.gpus[0].limit_watts == A40_DEFAULT_LIMIT_WATTS


def test_every_gpu_gets_the_same_limit_and_energy_adds_up(shipped_data: Path) -> None:
    curve = median_a40_curve(shipped_data)
    fake = curve_fleet(curve, gpu_count=2)
    engine = engine_over(fake)
    report = engine.optimize(lambda _: fake.run_step(), 2000)
    want = expected_limit(curve.points, 0.05)
    assert report.chosen_power_limit_watts == want
    for gpu in fake.gpus:
        assert want in gpu.limit_history_watts
    baseline = report.measurements[0]
    assert baseline.joules_per_step == pytest.approx(
        2 * curve.joules_per_step(A40_DEFAULT_LIMIT_WATTS), rel=1e-4
    )


def test_without_nvml_training_runs_unchanged_and_says_no_limit_was_tuned(
    shipped_data: Path,
) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data), library_present=False)
    engine = engine_over(fake)
    seen: list[int] = []
    report = engine.optimize(seen.append, 25)

    assert seen == list(range(25))
    assert not report.tuned
    assert report.steps == 25
    assert "no GPU power limit" in report.reason
    assert "NVML" in report.summary()
    assert "not tuned" in report.summary()


def test_without_permission_training_runs_unchanged_and_the_reason_says_how_to_fix_it(
    shipped_data: Path,
) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data), can_set_limits=False)
    engine = engine_over(fake)
    report = engine.optimize(lambda _: fake.run_step(), 200)

    assert fake.steps == 200
    assert not report.tuned
    assert "CAP_SYS_ADMIN" in report.reason
    assert fake.gpus[0].limit_watts == A40_DEFAULT_LIMIT_WATTS


def test_too_short_a_run_is_not_tuned_and_says_how_many_steps_profiling_needs(
    shipped_data: Path,
) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data))
    report = engine_over(fake).optimize(lambda _: fake.run_step(), 20)
    assert not report.tuned
    assert "before profiling finished" in report.reason
    assert fake.gpus[0].limit_watts == A40_DEFAULT_LIMIT_WATTS


def test_a_run_ending_mid_profile_chooses_among_the_limits_it_measured(
    shipped_data: Path,
) -> None:
    curve = median_a40_curve(shipped_data)
    fake = curve_fleet(curve)
    settings = OptimizerConfig(profile_steps=10, min_window_seconds=0.0, settle_steps=0)
    report = engine_over(fake).optimize(
        lambda _: fake.run_step(), settings.warmup_steps + 4 * 10, settings=settings
    )
    measured = {m.power_limit_watts: (m.seconds_per_step, 1.0) for m in report.measurements}
    assert len(measured) == 4
    assert report.tuned
    assert "ended before every candidate" in report.reason
    assert report.chosen_power_limit_watts in measured


def test_optimizer_state_machine_drives_a_plain_loop_with_warmup_zero(shipped_data: Path) -> None:
    curve = median_a40_curve(shipped_data)
    fake = curve_fleet(curve)
    engine = engine_over(fake)
    optimizer = engine.power_limit_optimizer(
        OptimizerConfig(warmup_steps=0, settle_steps=0, profile_steps=5, min_window_seconds=0)
    )
    assert isinstance(optimizer, PowerLimitOptimizer)
    while not optimizer.profiling_done:
        optimizer.on_step_begin()
        fake.run_step()
        optimizer.on_step_end()
    assert optimizer.steps == 5 * len(curve.limits_watts)
    assert fake.gpus[0].limit_watts == expected_limit(curve.points, 0.05)
    optimizer.restore()
    assert fake.gpus[0].limit_watts == A40_DEFAULT_LIMIT_WATTS


def test_candidates_run_from_the_maximum_down_and_include_the_default() -> None:
    assert candidate_power_limits(100, 300, 300) == [300, 275, 250, 225, 200, 175, 150, 125, 100]
    assert candidate_power_limits(150, 350, 320, step_watts=50) == [350, 320, 300, 250, 200, 150]
    with pytest.raises(ValueError, match="above"):
        candidate_power_limits(300, 100, 200)


def test_choice_prefers_the_faster_limit_when_energies_tie() -> None:
    measurements = [
        LimitMeasurement(300, 10, 1.0, 100.0),
        LimitMeasurement(250, 10, 1.02, 90.0),
        LimitMeasurement(200, 10, 1.04, 90.0),
        LimitMeasurement(150, 10, 1.30, 70.0),
    ]
    choice = choose_power_limit(measurements, 300, 0.05)
    assert choice.chosen.power_limit_watts == 250
    assert choice.energy_saved_fraction == pytest.approx(0.1)
    with pytest.raises(ValueError, match="baseline"):
        choose_power_limit(measurements[1:], 300, 0.05)


def test_settings_reject_a_negative_slowdown() -> None:
    with pytest.raises(ValueError, match=r"0\.05 means 5 %"):
        OptimizerConfig(max_slowdown=-0.1)


def test_measured_time_and_energy_per_step_follow_the_curve(shipped_data: Path) -> None:
    curve = median_a40_curve(shipped_data)
    _, _, report = train(curve)
    for m in report.measurements:
        assert m.seconds_per_step == pytest.approx(curve.seconds_per_step(m.power_limit_watts))
        assert m.joules_per_step == pytest.approx(
            curve.joules_per_step(m.power_limit_watts), rel=1e-4
        )
        assert m.seconds >= OptimizerConfig().min_window_seconds
