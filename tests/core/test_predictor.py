"""The load predictor: features, the last-value fallback, and beating it where there is signal."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from lepton.core.hints import JobHints, WorkloadKind
from lepton.core.predictor import (
    BASELINES,
    EWM,
    MODEL,
    ROLLING_MEAN,
    ForecastSource,
    LoadPredictor,
    PredictorConfig,
    Series,
    Split,
    baseline_forecasts,
    evaluate,
    hints_with_forecast,
    rows_of,
    series_features,
    service_demand,
    split_in_time,
    training_rows,
    utilization_csv,
)

# Measured utilisation of 100 serving pods (Alibaba's GenAI trace, kept with the benchmarks).
UTILIZATION = (
    Path(__file__).resolve().parents[2] / "bench/data/utilization/genai_pod_gpu_duty_cycle.csv"
)

STEP = 300.0
DAY_STEPS = int(86_400 / STEP)


def diurnal(days: int, phase_hours: float = 0.0, noise: float = 0.03, seed: int = 0) -> Series:
    """A node busy by day and quiet by night, with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY_STEPS) * STEP
    hours = (t / 3600 + phase_hours) % 24
    values = 0.5 + 0.4 * np.sin(2 * math.pi * (hours - 6) / 24) + rng.normal(0, noise, len(t))
    return Series.of(list(zip(t, values, strict=True)))


def test_series_drops_nans_sorts_and_clips() -> None:
    s = Series.of([(20.0, 1.5), (10.0, 0.2), (15.0, float("nan"))])
    assert list(s.timestamps) == [10.0, 20.0]
    assert list(s.values) == [0.2, 1.0]
    assert Series.of([]).last() == 0.0


def test_training_rows_target_the_mean_over_the_horizon() -> None:
    s = Series.of([(i * STEP, i / 100) for i in range(30)])
    config = PredictorConfig(lags=3, windows=(3,), horizon_steps=2, min_history=3)
    rows = training_rows(s, config)
    assert len(rows) == 30 - 2 - 2
    assert rows.x[0, 0] * rows.scale[0] == pytest.approx(0.02)  # the newest sample seen
    assert rows.future_mean[0] == pytest.approx((0.03 + 0.04) / 2)
    assert list(rows.future[0]) == pytest.approx([0.03, 0.04])


def test_features_never_read_the_future() -> None:
    """Each row's features are the same whether or not the samples after it exist or change."""
    rng = np.random.default_rng(1)
    values = rng.random(300) * (rng.random(300) > 0.6)
    full = Series(np.arange(300) * STEP, values)
    config = PredictorConfig(windows=(5, 60), scale_window=30)
    x_full, scale_full = series_features(full, config)
    for cut in (1, 2, 7, 59, 61, 150, 299):
        changed = values.copy()
        changed[cut:] = rng.random(300 - cut)  # rewrite everything after sample cut-1
        x_cut, scale_cut = series_features(full.head(cut), config)
        x_changed, _ = series_features(Series(full.timestamps, changed), config)
        assert np.allclose(x_cut, x_full[:cut]) and np.allclose(scale_cut, scale_full[:cut])
        assert np.allclose(x_changed[:cut], x_full[:cut])


def test_short_history_falls_back_to_its_own_statistics() -> None:
    predictor = LoadPredictor(PredictorConfig(lags=12))
    short = {"n1": Series.of([(0, 0.3), (STEP, 0.6)]), "n2": Series.of([])}
    assert predictor.fit(short) is False
    assert predictor.predict(short) == {"n1": pytest.approx(0.45), "n2": 0.0}


def test_untrained_predictor_forecasts_the_recent_mean() -> None:
    history = {"n": diurnal(1)}
    recent = history["n"].values[-PredictorConfig().scale_window :].mean()
    assert LoadPredictor().predict(history) == {"n": pytest.approx(recent)}


def test_model_beats_the_last_value_on_a_daily_cycle() -> None:
    history = {f"n{i}": diurnal(6, phase_hours=i, seed=i) for i in range(4)}
    result = evaluate(history, PredictorConfig(max_iter=60))
    assert result.test_rows > 500
    assert result.model_mae < result.last_value_mae
    assert result.improvement > 0.2


def test_forecasts_are_in_range_and_nodes_with_short_history_still_get_one() -> None:
    history = {f"n{i}": diurnal(3, phase_hours=i, seed=i) for i in range(3)}
    predictor = LoadPredictor(PredictorConfig(max_iter=30))
    assert predictor.fit(history)
    history["new"] = Series.of([(0, 0.42)])
    forecasts = predictor.predict(history)
    assert forecasts["new"] == pytest.approx(0.42)
    assert all(0.0 <= v <= 1.0 for v in forecasts.values())
    bounds = predictor.predict_forecasts(history)
    assert all(f.upper >= f.mean for f in bounds.values())


def test_upper_bound_covers_about_its_quantile_on_held_out_days() -> None:
    history = {f"n{i}": diurnal(6, phase_hours=i, noise=0.1, seed=i) for i in range(4)}
    result = evaluate(history, PredictorConfig(max_iter=60))
    assert 0.8 <= result.upper_coverage <= 0.97


def test_service_demand_comes_from_own_then_workload_then_declared_then_prior() -> None:
    history = [diurnal(2, phase_hours=i, seed=i) for i in range(3)]
    predictor = LoadPredictor(PredictorConfig(max_iter=30))
    assert predictor.fit(history)
    own = service_demand(predictor, history[0], history[1:], measured_speed=2.0)
    assert own.source is ForecastSource.OWN_HISTORY
    assert own.reference_utilization_percent == pytest.approx(
        min(100.0, own.forecast.upper * 200.0)
    )
    assert "own history" in own.explain()
    new = service_demand(predictor, Series.of([]), history[1:], declared_percent=30.0)
    assert new.source is ForecastSource.WORKLOAD_HISTORY
    declared = service_demand(predictor, None, [], declared_percent=30.0)
    assert declared.source is ForecastSource.DECLARED
    assert declared.reference_utilization_percent == 30.0
    prior = service_demand(predictor)
    assert prior.source is ForecastSource.PRIOR and prior.reference_utilization_percent == 100.0
    with pytest.raises(ValueError, match=r"0\.\.100 percent"):
        service_demand(predictor, declared_percent=130.0)


def test_split_in_time_cuts_every_node_at_the_same_moment() -> None:
    history = {"a": diurnal(2), "b": diurnal(2, seed=3)}
    train, test = split_in_time(history, 0.5)
    assert train["a"].timestamps.max() < test["b"].timestamps.min()


def test_model_beats_every_baseline_on_pods_it_has_never_seen() -> None:
    """The issue's bar on real data: MAE at most 0.8x the best baseline, p90 covering 85-95 %.

    A new Deployment's pods have no history the model trained on: 30 of the 100 pods
    are held out whole. Smaller than the benchmark's model (10,000 rows, 50 trees) to
    stay fast; the benchmark measures about 0.57x with 40,000 rows and 100 trees.
    This split trains on the other pods' rows of the hours it scores (see
    ``test_the_unseen_split_learns_the_test_hours_from_siblings_the_honest_one_cannot``):
    the honest new-pod figure is ``Split.UNSEEN_LATER``'s, in the benchmark.
    """
    with UTILIZATION.open() as handle:
        history = utilization_csv(handle)
    config = PredictorConfig(
        step_seconds=60.0,
        horizon_steps=60,
        time_of_day=False,
        max_training_rows=10_000,
        max_iter=50,
    )
    result = evaluate(history, config, split=Split.UNSEEN_SERIES)
    assert result.test_series >= 25 and result.test_rows > 20_000  # a few pods are too short
    assert result.mae_ratio() <= 0.8, {k: v.mae for k, v in result.scores.items()}
    assert 0.85 <= result.upper_coverage <= 0.95
    assert result.scores[MODEL].pinball < min(result.scores[b].pinball for b in BASELINES)


def test_utilization_csv_reads_percent_per_pod() -> None:
    lines = ["timestamp_anon,value,container_ip", "120,50.0,b", "60,25.0,a", "0,10.0,a"]
    history = utilization_csv(lines)
    assert sorted(history) == ["a", "b"]
    assert list(history["a"].values) == pytest.approx([0.10, 0.25])
    assert list(history["a"].timestamps) == [0.0, 60.0]


def test_a_service_with_history_is_placed_by_its_forecast_p90_not_its_declared_demand() -> None:
    busy = [diurnal(2, phase_hours=i, seed=i) for i in range(3)]
    quiet = Series(busy[0].timestamps, busy[0].values * 0.2)
    predictor = LoadPredictor(PredictorConfig(max_iter=30))
    assert predictor.fit([*busy, quiet])
    service = JobHints("web", workload_kind=WorkloadKind.SERVICE, reference_utilization_percent=90)
    hints, demand = hints_with_forecast(service, predictor, quiet, declared=True)
    assert demand is not None and demand.source is ForecastSource.OWN_HISTORY
    assert hints.reference_utilization_percent == demand.reference_utilization_percent
    assert hints.reference_utilization_percent < 40  # a fifth of a day-night cycle, not 90
    new, demand = hints_with_forecast(service, predictor, None, busy, declared=True)
    assert demand is not None and demand.source is ForecastSource.WORKLOAD_HISTORY
    assert new.reference_utilization_percent > hints.reference_utilization_percent
    declared, demand = hints_with_forecast(service, predictor, None, declared=True)
    assert declared.reference_utilization_percent == 90 and demand is not None
    assert demand.source is ForecastSource.DECLARED
    _, demand = hints_with_forecast(service, predictor, None, declared=False)
    assert demand is not None and demand.source is ForecastSource.PRIOR
    batch = JobHints("train")
    assert hints_with_forecast(batch, predictor, quiet, declared=False) == (batch, None)


def test_the_ewm_baseline_is_the_weighted_mean_of_what_a_young_series_has_shown() -> None:
    """Started at the first value, the EWM leaned on that one sample for ~1/alpha samples:
    a weak baseline on a new pod's first hour (the unseen split is every row of new pods).
    Failed before the fix (0.33 after twenty busy samples, not 0.96)."""
    values = [0.0] + [1.0] * 40
    series = Series.of([(60.0 * k, v) for k, v in enumerate(values)])
    config = PredictorConfig(step_seconds=60.0, horizon_steps=5, min_history=1)
    rows = rows_of([series], config)
    ewm = baseline_forecasts([series], rows, config, ewm_alpha=0.02)[EWM]
    at = int(np.flatnonzero(rows.position == 20)[0])
    expected = sum(0.98**k for k in range(20)) / sum(0.98**k for k in range(21))
    assert ewm[at] == pytest.approx(expected)  # 20 ones and a zero, weighted
    assert ewm[at] > 0.9


def test_the_rolling_mean_baseline_window_is_chosen_on_training_rows_only() -> None:
    """A level that steps: a short window wins on training rows; the test rows never vote."""
    rng = np.random.default_rng(3)
    history = {
        f"p{i}": Series.of(
            [
                (60.0 * k, 0.2 + 0.6 * ((k // 90) % 2) + 0.02 * rng.standard_normal())
                for k in range(900)
            ]
        )
        for i in range(6)
    }
    config = PredictorConfig(step_seconds=60.0, horizon_steps=10, time_of_day=False, max_iter=10)
    result = evaluate(history, config, split=Split.LATER_IN_TIME)
    assert result.mean_window <= 15
    assert result.scores[ROLLING_MEAN].mae < result.scores["own rolling p90"].mae


def test_recency_weighting_follows_a_level_shift_the_training_period_ends_with() -> None:
    """Pods whose bursts shrink late in training: weighting recent rows more forecasts the
    quieter regime better than weighting every row alike."""
    rng = np.random.default_rng(5)

    def pod(seed: int) -> Series:
        local = np.random.default_rng(seed)
        out = []
        for k in range(1200):
            burst = 0.6 if k < 900 else 0.1  # busy, then quiet
            out.append((60.0 * k, burst * float(local.random() < 0.3) + 0.01 * rng.random()))
        return Series.of(out)

    history = {f"p{i}": pod(i) for i in range(8)}
    base = PredictorConfig(step_seconds=60.0, horizon_steps=30, time_of_day=False, max_iter=30)
    plain = evaluate(history, base, train_fraction=0.85)
    recent = evaluate(history, dataclasses.replace(base, recency_seconds=3600.0), 0.85)
    assert recent.model_mae < plain.model_mae


def test_the_unseen_split_learns_the_test_hours_from_siblings_the_honest_one_cannot() -> None:
    """Replicas that move together (one shared, unforecastable random walk): held out whole,
    the model learns each hour's future from the siblings' rows of that same hour (the
    series' length tells it the hour); held out and later in time, it has only the past."""
    rng = np.random.default_rng(11)
    shared = np.clip(0.4 + np.cumsum(0.03 * rng.standard_normal(1500)), 0.05, 0.95)
    history = {
        f"p{i}": Series.of(
            [(60.0 * k, float(v + 0.02 * rng.standard_normal())) for k, v in enumerate(shared)]
        )
        for i in range(10)
    }
    config = PredictorConfig(step_seconds=60.0, horizon_steps=30, time_of_day=False, max_iter=40)
    leaky = evaluate(history, config, split=Split.UNSEEN_SERIES)
    honest = evaluate(history, config, split=Split.UNSEEN_LATER)
    assert leaky.mae_ratio(EWM) < 0.7  # "beats" a random walk's best forecast: it saw it
    assert honest.mae_ratio(EWM) > 0.9  # nothing beats the last level of a random walk
