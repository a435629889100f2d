"""The load predictor: features, the last-value fallback, and beating it where there is signal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lepton.core.predictor import (
    LoadPredictor,
    PredictorConfig,
    Series,
    evaluate,
    split_in_time,
    training_rows,
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
    config = PredictorConfig(lags=3, horizon_steps=2)
    x, y = training_rows(s, config)
    assert len(y) == 30 - 3 - 2 + 1
    assert list(x[0, :3]) == pytest.approx([0.0, 0.01, 0.02])  # lags, oldest first
    assert y[0] == pytest.approx((0.03 + 0.04) / 2)


def test_short_history_falls_back_to_the_last_value() -> None:
    predictor = LoadPredictor(PredictorConfig(lags=12))
    short = {"n1": Series.of([(0, 0.3), (STEP, 0.6)]), "n2": Series.of([])}
    assert predictor.fit(short) is False
    assert predictor.predict(short) == {"n1": 0.6, "n2": 0.0}


def test_untrained_predictor_forecasts_the_last_value() -> None:
    history = {"n": diurnal(1)}
    assert LoadPredictor().predict(history) == {"n": pytest.approx(history["n"].last())}


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


def test_split_in_time_cuts_every_node_at_the_same_moment() -> None:
    history = {"a": diurnal(2), "b": diurnal(2, seed=3)}
    train, test = split_in_time(history, 0.5)
    assert train["a"].timestamps.max() < test["b"].timestamps.min()
