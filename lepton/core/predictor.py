"""Forecasting a node's GPU utilisation over a job's horizon from its history.

A job placed on a node that will soon be busy runs slower and costs more, so
the scorer wants each node's *mean utilisation over the next horizon*, not its
value now. One scikit-learn model is trained on every node's history pooled
together (nodes are many, each history is short), from features a reader can
name: the last ``lags`` samples, their mean and trend, and the time of day
(sine and cosine, so 23:59 is close to 00:00).

Where a node's history is shorter than the lags, or no model has been trained
yet, the forecast is the node's last value (and 0 with no history at all):
the baseline every benchmark compares against.

History comes from a :class:`HistorySource` (Prometheus range queries of the
exporter's ``lepton_gpu_utilization_ratio`` in the extender; a trace in the
benchmark), so the model never knows where its data came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # scikit-learn costs ~90 MB: imported when a model is first trained
    from sklearn.ensemble import HistGradientBoostingRegressor

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Series:
    """Regularly sampled utilisation of one node: unix seconds and values in 0..1."""

    timestamps: np.ndarray[Any, np.dtype[np.float64]]
    values: np.ndarray[Any, np.dtype[np.float64]]

    @classmethod
    def of(cls, points: Sequence[tuple[float, float]]) -> Series:
        """From (unix seconds, utilisation) pairs; NaNs dropped, values clipped to 0..1."""
        array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        array = array[~np.isnan(array).any(axis=1)]
        array = array[np.argsort(array[:, 0], kind="stable")]
        return cls(array[:, 0].copy(), np.clip(array[:, 1], 0.0, 1.0))

    def __len__(self) -> int:
        return len(self.values)

    def last(self) -> float:
        return float(self.values[-1]) if len(self.values) else 0.0


class HistorySource(Protocol):
    """Where utilisation history comes from (Prometheus, a trace, a test)."""

    def node_utilization(
        self, start: datetime, end: datetime, step_seconds: float
    ) -> Mapping[str, Series]:
        """Each node's mean GPU utilisation (0..1) sampled every ``step_seconds``."""
        ...


@dataclass(frozen=True)
class PredictorConfig:
    """Shape of the problem: sampling step, how far back to look and how far ahead."""

    step_seconds: float = 300.0
    lags: int = 12  # one hour of 5-minute samples
    horizon_steps: int = 12  # forecast the mean of the next hour
    max_training_rows: int = 200_000
    max_iter: int = 100
    random_state: int = 0


def _time_features(timestamps: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, Any]:
    phase = 2 * math.pi * (np.mod(timestamps, SECONDS_PER_DAY) / SECONDS_PER_DAY)
    return np.column_stack([np.sin(phase), np.cos(phase)])


def features(
    windows: np.ndarray[Any, Any], timestamps: np.ndarray[Any, np.dtype[np.float64]]
) -> np.ndarray[Any, Any]:
    """Rows of [lags (oldest..newest), mean, newest - oldest, sin(day), cos(day)]."""
    mean = windows.mean(axis=1, keepdims=True)
    trend = (windows[:, -1] - windows[:, 0]).reshape(-1, 1)
    return np.hstack([windows, mean, trend, _time_features(timestamps)])


def training_rows(
    series: Series, config: PredictorConfig
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(features, target) for every point with ``lags`` behind it and a horizon ahead."""
    lags, horizon = config.lags, config.horizon_steps
    n = len(series) - lags - horizon + 1
    if n <= 0:
        return np.empty((0, lags + 4)), np.empty(0)
    values = series.values
    windows = np.lib.stride_tricks.sliding_window_view(values, lags)[:n]
    future = np.lib.stride_tricks.sliding_window_view(values[lags:], horizon)[:n]
    stamps = series.timestamps[lags - 1 : lags - 1 + n]
    return features(windows, stamps), future.mean(axis=1)


@dataclass
class LoadPredictor:
    """Pooled gradient-boosted forecast of mean utilisation over the horizon."""

    config: PredictorConfig = field(default_factory=PredictorConfig)
    model: HistGradientBoostingRegressor | None = None
    trained_rows: int = 0

    def fit(self, history: Mapping[str, Series]) -> bool:
        """Train on every node's history; False (and the last-value fallback) when too short."""
        xs, ys = [], []
        for series in history.values():
            x, y = training_rows(series, self.config)
            if len(y):
                xs.append(x)
                ys.append(y)
        if not xs:
            return False
        x_all, y_all = np.vstack(xs), np.concatenate(ys)
        if len(y_all) < 2 * (self.config.lags + 4):
            return False
        if len(y_all) > self.config.max_training_rows:
            pick = np.random.default_rng(self.config.random_state).choice(
                len(y_all), self.config.max_training_rows, replace=False
            )
            x_all, y_all = x_all[pick], y_all[pick]
        from sklearn.ensemble import HistGradientBoostingRegressor

        # The model learns the change from the last value, under absolute error: where the
        # features say nothing it predicts no change, i.e. the baseline, not a blurred mean.
        model = HistGradientBoostingRegressor(
            loss="absolute_error",
            max_iter=self.config.max_iter,
            random_state=self.config.random_state,
        )
        model.fit(x_all, y_all - x_all[:, self.config.lags - 1])
        self.model, self.trained_rows = model, len(y_all)
        return True

    def forecast(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Mean utilisation over the horizon for rows of :func:`features` (model required)."""
        assert self.model is not None
        change = np.asarray(self.model.predict(x), dtype=np.float64)
        return np.clip(x[:, self.config.lags - 1] + change, 0.0, 1.0)

    def predict(self, history: Mapping[str, Series]) -> dict[str, float]:
        """Each node's forecast mean utilisation (0..1); the last value where history is short."""
        out = {name: s.last() for name, s in history.items()}
        if self.model is None:
            return out
        lags = self.config.lags
        ready = [name for name, s in history.items() if len(s) >= lags]
        if not ready:
            return out
        windows = np.vstack([history[name].values[-lags:] for name in ready])
        stamps = np.array([history[name].timestamps[-1] for name in ready])
        forecasts = self.forecast(features(windows, stamps))
        out.update({name: float(f) for name, f in zip(ready, forecasts, strict=True)})
        return out


@dataclass(frozen=True)
class Evaluation:
    """Mean absolute error of the model and of the last-value baseline on held-out history."""

    model_mae: float
    last_value_mae: float
    test_rows: int
    train_rows: int

    @property
    def improvement(self) -> float:
        """Fraction of the baseline's error the model removes (negative: worse)."""
        if self.last_value_mae == 0:
            return 0.0
        return 1.0 - self.model_mae / self.last_value_mae


def split_in_time(
    history: Mapping[str, Series], train_fraction: float
) -> tuple[dict[str, Series], dict[str, Series]]:
    """Each node's series cut at the same moment: the past to train on, the rest to test."""
    stamps = np.concatenate([s.timestamps for s in history.values() if len(s)])
    cut = float(np.quantile(stamps, train_fraction)) if len(stamps) else 0.0
    train, test = {}, {}
    for name, s in history.items():
        before = s.timestamps <= cut
        train[name] = Series(s.timestamps[before], s.values[before])
        test[name] = Series(s.timestamps[~before], s.values[~before])
    return train, test


def evaluate(
    history: Mapping[str, Series],
    config: PredictorConfig | None = None,
    train_fraction: float = 0.7,
) -> Evaluation:
    """Train on the first part of every series, compare model and last value on the rest."""
    predictor = LoadPredictor(config or PredictorConfig())
    train, test = split_in_time(history, train_fraction)
    predictor.fit(train)
    lags = predictor.config.lags
    model_errors, baseline_errors = [], []
    for series in test.values():
        x, y = training_rows(series, predictor.config)
        if not len(y):
            continue
        baseline_errors.append(np.abs(x[:, lags - 1] - y))
        if predictor.model is not None:
            model_errors.append(np.abs(predictor.forecast(x) - y))
        else:
            model_errors.append(np.abs(x[:, lags - 1] - y))
    if not baseline_errors:
        return Evaluation(math.nan, math.nan, 0, predictor.trained_rows)
    model = np.concatenate(model_errors)
    baseline = np.concatenate(baseline_errors)
    return Evaluation(
        float(model.mean()), float(baseline.mean()), len(model), predictor.trained_rows
    )
