"""Forecasting GPU utilisation for placement: a horizon's mean and its upper quantile.

Placement asks two questions of a utilisation series (a pod's, or a node's sum):
how busy will it be on average over the next horizon (the energy it will draw),
and how busy can it get (the headroom its GPU must keep, an upper quantile such
as p90 of the samples in the horizon). One scikit-learn model per question is
trained on every series pooled together, because series are many and short and
a new Deployment is exactly a series the model has never seen.

Features come from the history only (each row sees the samples up to its own
time, never after: ``tests/core/test_predictor.py`` checks it by editing the
future): the last values, rolling means, spread, p90 and share of busy samples
over several windows, an exponentially weighted mean, how long the series is,
and optionally the time of day. Every level is divided by the series' own
recent mean (its *scale*), and the targets too, so a model learns shapes
("after a burst, half of it stays") that carry over from one pod to another
whatever their size; rows are weighted by the scale, so the loss is still the
absolute (or pinball) error in utilisation.

A pod with no history is forecast from the other pods of its workload (same
owner, image or labels), then from a declared demand, then from a prior: see
:func:`service_demand`. Where a series is too short or no model is trained, the
forecast is the series' own recent mean and p90 (and the prior with no samples).

History comes from a :class:`HistorySource` (Prometheus range queries of the
exporter's ``lepton_gpu_utilization_ratio`` in the Lepton scheduler; a trace in the
benchmark), so the model never knows where its data came from.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lepton.core.hints import JobHints

if TYPE_CHECKING:  # scikit-learn costs ~90 MB: imported when a model is first trained
    from sklearn.ensemble import HistGradientBoostingRegressor

SECONDS_PER_DAY = 86_400.0
Array = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class Series:
    """Regularly sampled utilisation of one pod or node: unix seconds and values in 0..1."""

    timestamps: Array
    values: Array

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

    def head(self, n: int) -> Series:
        """The first ``n`` samples (the history as it was at the n-th sample)."""
        return Series(self.timestamps[:n], self.values[:n])


class HistorySource(Protocol):
    """Where utilisation history comes from (Prometheus, a trace, a test)."""

    def node_utilization(
        self, start: datetime, end: datetime, step_seconds: float
    ) -> Mapping[str, Series]:
        """Each node's mean GPU utilisation (0..1) sampled every ``step_seconds``."""
        ...


@dataclass(frozen=True)
class PredictorConfig:
    """Shape of the problem: sampling step, the windows looked back at, the horizon ahead."""

    step_seconds: float = 300.0
    lags: int = 3  # the newest samples, as they are
    windows: tuple[int, ...] = (3, 12, 48)  # rolling statistics over these many samples
    scale_window: int = 48  # the series' own recent mean, which every level is divided by
    horizon_steps: int = 12  # forecast the next hour (of 5-minute samples)
    quantile: float = 0.9  # the upper bound: this quantile of a sample in the horizon
    min_history: int = 3  # fewer samples: the series' own statistics, not the model
    time_of_day: bool = True
    normalise: bool = True  # levels and targets relative to the series' recent mean
    scale_floor: float = 0.01  # a series idle so far is measured against 1 % utilisation
    busy_threshold: float = 0.01  # a sample above this counts as busy
    weight_power: float = 1.0  # rows weighted by scale**power: 1 keeps the loss in utilisation
    # Rows weighted by exp(-age / recency_seconds), age from the newest training row: a
    # model that follows a level shift (a busy period gone quiet). None: all rows alike.
    recency_seconds: float | None = None
    max_training_rows: int = 200_000
    max_iter: int = 100
    random_state: int = 0


def _window_mean(values: Array, window: int) -> tuple[Array, Array]:
    """Mean and standard deviation of the last ``window`` samples at each index.

    The first indices see fewer samples (all there are): no value after index i is read.
    """
    n = len(values)
    counts = np.minimum(np.arange(1, n + 1), window).astype(np.float64)
    c1 = np.concatenate([[0.0], np.cumsum(values)])
    c2 = np.concatenate([[0.0], np.cumsum(values * values)])
    idx = np.arange(1, n + 1)
    lo = np.maximum(idx - window, 0)
    mean = (c1[idx] - c1[lo]) / counts
    var = np.maximum((c2[idx] - c2[lo]) / counts - mean * mean, 0.0)
    return mean, np.sqrt(var)


def window_quantile(values: Array, window: int, q: float) -> tuple[Array, Array]:
    """The ``q`` quantile (linear, numpy's default) and the max of the last ``window`` samples."""
    n = len(values)
    if not n:
        return values.copy(), values.copy()
    padded = np.concatenate([np.full(window - 1, np.inf), values])
    ordered = np.sort(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)
    counts = np.minimum(np.arange(1, n + 1), window)
    position = (counts - 1) * q
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, counts - 1)
    rows = np.arange(n)
    low, high = ordered[rows, below], ordered[rows, above]
    quantile = low + (high - low) * (position - below)
    return quantile, ordered[rows, counts - 1]


def _ewma(values: Array, alpha: float, adjusted: bool = False) -> Array:
    """Exponentially weighted mean up to each index, started at the first value.

    ``adjusted``: the weighted mean of the samples seen so far (pandas' ``adjust=True``),
    which does not over-weight the first sample while the series is young.
    """
    out = np.empty(len(values))
    level = float(values[0]) if len(values) else 0.0
    total = weights = 0.0
    for i, value in enumerate(values.tolist()):
        if adjusted:
            total = (1.0 - alpha) * total + value
            weights = (1.0 - alpha) * weights + 1.0
            out[i] = total / weights
        else:
            level += alpha * (value - level)
            out[i] = level
    return out


def feature_names(config: PredictorConfig) -> list[str]:
    """Column names of :func:`series_features`, in order."""
    names = [f"lag{k}" for k in range(config.lags)]
    for w in config.windows:
        names += [f"mean{w}", f"std{w}", f"p90_{w}", f"max{w}", f"busy{w}"]
    names += ["ewma_fast", "ewma_slow", "log_scale", "log_length"]
    if config.time_of_day:
        names += ["sin_day", "cos_day"]
    return names


def series_features(series: Series, config: PredictorConfig) -> tuple[Array, Array]:
    """(features, scale) at every sample of ``series``, each from the samples up to it only.

    Levels are divided by the scale (the mean of the last ``scale_window`` samples, at
    least ``scale_floor``); the scale itself enters as its logarithm.
    """
    v = series.values
    n = len(v)
    scale_mean, _ = _window_mean(v, config.scale_window)
    scale = np.maximum(scale_mean, config.scale_floor)
    log_scale = np.log(scale)
    if not config.normalise:
        scale = np.ones(n)
    columns: list[Array] = []
    for k in range(config.lags):
        lagged = np.concatenate([np.full(min(k, n), v[0] if n else 0.0), v[: max(n - k, 0)]])
        columns.append(lagged / scale)
    for w in config.windows:
        mean, std = _window_mean(v, w)
        p90, top = window_quantile(v, w, 0.9)
        busy, _ = _window_mean((v > config.busy_threshold).astype(np.float64), w)
        columns += [mean / scale, std / scale, p90 / scale, top / scale, busy]
    columns += [_ewma(v, 0.3) / scale, _ewma(v, 0.03) / scale]
    columns += [log_scale, np.log1p(np.arange(1, n + 1, dtype=np.float64))]
    if config.time_of_day:
        phase = 2 * math.pi * (np.mod(series.timestamps, SECONDS_PER_DAY) / SECONDS_PER_DAY)
        columns += [np.sin(phase), np.cos(phase)]
    if not n:
        return np.empty((0, len(feature_names(config)))), np.empty(0)
    return np.column_stack(columns), scale


@dataclass(frozen=True)
class Rows:
    """Training or test rows of one or many series, with what the horizon held."""

    x: Array  # features (see feature_names)
    scale: Array  # each row's scale
    future_mean: Array  # mean of the horizon's samples: the mean forecast's target
    future: Array  # rows x horizon_steps: the horizon's samples (the upper bound's)
    series: np.ndarray[Any, np.dtype[np.int64]]  # which series (index into the input)
    position: np.ndarray[Any, np.dtype[np.int64]]  # index of the row's sample in its series
    time: Array  # unix seconds of the row's sample

    def __len__(self) -> int:
        return len(self.future_mean)

    @staticmethod
    def concat(parts: Sequence[Rows], config: PredictorConfig) -> Rows:
        if not parts:
            width = len(feature_names(config))
            empty_int = np.empty(0, dtype=np.int64)
            return Rows(
                np.empty((0, width)),
                np.empty(0),
                np.empty(0),
                np.empty((0, config.horizon_steps)),
                empty_int,
                empty_int.copy(),
                np.empty(0),
            )
        return Rows(
            np.vstack([p.x for p in parts]),
            np.concatenate([p.scale for p in parts]),
            np.concatenate([p.future_mean for p in parts]),
            np.vstack([p.future for p in parts]),
            np.concatenate([p.series for p in parts]),
            np.concatenate([p.position for p in parts]),
            np.concatenate([p.time for p in parts]),
        )


def training_rows(series: Series, config: PredictorConfig, index: int = 0) -> Rows:
    """A row for every sample with ``min_history`` samples up to it and a full horizon after."""
    h, n = config.horizon_steps, len(series)
    first = config.min_history - 1
    count = n - h - first
    if count <= 0:
        return Rows.concat([], config)
    x, scale = series_features(series, config)
    future = np.lib.stride_tricks.sliding_window_view(series.values[first + 1 :], h)[:count]
    at = np.arange(first, first + count)
    return Rows(
        x[at],
        scale[at],
        future.mean(axis=1),
        np.array(future),
        np.full(count, index, dtype=np.int64),
        at.astype(np.int64),
        series.timestamps[at],
    )


def rows_of(history: Sequence[Series], config: PredictorConfig) -> Rows:
    """Rows of every series, each tagged with its index in ``history``."""
    return Rows.concat([training_rows(s, config, i) for i, s in enumerate(history)], config)


class ForecastSource(StrEnum):
    """Where a forecast came from, in the words explanations show."""

    OWN_HISTORY = "own history"
    WORKLOAD_HISTORY = "workload history"
    DECLARED = "declared"
    PRIOR = "prior"


@dataclass(frozen=True)
class Forecast:
    """Utilisation (0..1) over the horizon: its mean, its upper quantile, and where it came from."""

    mean: float
    upper: float
    source: ForecastSource

    def as_dict(self) -> dict[str, Any]:
        return {"mean": round(self.mean, 4), "upper": round(self.upper, 4), "source": self.source}


# A service nobody has measured or declared may keep its GPU busy: the prior is cautious.
DEFAULT_PRIOR = Forecast(mean=0.5, upper=1.0, source=ForecastSource.PRIOR)


def _sample_future(rows: Rows, rng: np.random.Generator, draws: int) -> tuple[Array, Array]:
    """``draws`` random samples of each row's horizon: targets of the upper quantile."""
    pick = rng.integers(0, rows.future.shape[1], size=(len(rows), draws))
    targets = np.take_along_axis(rows.future, pick, axis=1)
    return np.repeat(np.arange(len(rows)), draws), targets.reshape(-1)


@dataclass
class LoadPredictor:
    """Pooled gradient-boosted forecasts of a horizon's mean and upper quantile."""

    config: PredictorConfig = field(default_factory=PredictorConfig)
    mean_model: HistGradientBoostingRegressor | None = None
    upper_model: HistGradientBoostingRegressor | None = None
    trained_rows: int = 0

    @property
    def trained(self) -> bool:
        return self.mean_model is not None and self.upper_model is not None

    def fit(self, history: Mapping[str, Series] | Sequence[Series]) -> bool:
        """Train on every series pooled; False (and the series' own statistics) when too short."""
        series = list(history.values()) if isinstance(history, Mapping) else list(history)
        rows = rows_of(series, self.config)
        if len(rows) < 2 * rows.x.shape[1]:
            return False
        return self.fit_rows(rows)

    def fit_rows(self, rows: Rows) -> bool:
        from sklearn.ensemble import HistGradientBoostingRegressor

        rng = np.random.default_rng(self.config.random_state)
        if len(rows) > self.config.max_training_rows:
            keep = np.zeros(len(rows), dtype=np.bool_)
            keep[rng.choice(len(rows), self.config.max_training_rows, replace=False)] = True
            rows = _select(rows, keep)
        common = {
            "max_iter": self.config.max_iter,
            "random_state": self.config.random_state,
            "learning_rate": 0.1,
            "min_samples_leaf": 40,
        }
        # Targets relative to the scale, rows weighted by it: the loss stays in utilisation.
        mean_model = HistGradientBoostingRegressor(loss="absolute_error", **common)
        weight = rows.scale**self.config.weight_power
        if self.config.recency_seconds and len(rows):
            weight = weight * np.exp((rows.time - rows.time.max()) / self.config.recency_seconds)
        mean_model.fit(rows.x, rows.future_mean / rows.scale, sample_weight=weight)
        which, targets = _sample_future(rows, rng, draws=2)
        upper_model = HistGradientBoostingRegressor(
            loss="quantile", quantile=self.config.quantile, **common
        )
        upper_model.fit(rows.x[which], targets / rows.scale[which], sample_weight=weight[which])
        self.mean_model, self.upper_model, self.trained_rows = mean_model, upper_model, len(rows)
        return True

    def forecast_rows(self, x: Array, scale: Array) -> tuple[Array, Array]:
        """(mean, upper) in 0..1 for rows of :func:`series_features` (model required)."""
        assert self.mean_model is not None and self.upper_model is not None
        mean = np.clip(scale * self.mean_model.predict(x), 0.0, 1.0)
        upper = np.clip(scale * self.upper_model.predict(x), 0.0, 1.0)
        return mean, np.maximum(upper, mean)

    def forecast(self, series: Series) -> Forecast | None:
        """The series' forecast from its own history; None with no samples at all."""
        return self.forecast_many([series])[0]

    def forecast_many(self, series: Sequence[Series]) -> list[Forecast | None]:
        out: list[Forecast | None] = []
        ready: list[int] = []
        xs, scales = [], []
        for i, s in enumerate(series):
            if not len(s):
                out.append(None)
                continue
            recent = s.values[-self.config.scale_window :]
            out.append(
                Forecast(
                    float(recent.mean()),
                    float(np.quantile(recent, self.config.quantile)),
                    ForecastSource.OWN_HISTORY,
                )
            )
            if self.trained and len(s) >= self.config.min_history:
                x, scale = series_features(s, self.config)
                xs.append(x[-1])
                scales.append(scale[-1])
                ready.append(i)
        if ready:
            mean, upper = self.forecast_rows(np.vstack(xs), np.array(scales))
            for j, i in enumerate(ready):
                out[i] = Forecast(float(mean[j]), float(upper[j]), ForecastSource.OWN_HISTORY)
        return out

    def predict(self, history: Mapping[str, Series]) -> dict[str, float]:
        """Each series' forecast mean utilisation (0..1); 0 where there is no sample."""
        return {
            name: forecast.mean if forecast else 0.0
            for name, forecast in zip(
                history, self.forecast_many(list(history.values())), strict=True
            )
        }

    def predict_forecasts(self, history: Mapping[str, Series]) -> dict[str, Forecast]:
        """Each series' mean and upper forecast; series with no sample are left out."""
        forecasts = self.forecast_many(list(history.values()))
        return {name: f for name, f in zip(history, forecasts, strict=True) if f is not None}


def workload_forecast(predictor: LoadPredictor, siblings: Sequence[Series]) -> Forecast | None:
    """A new pod's forecast from the other pods of its workload: the mean of theirs."""
    return mean_forecast([f for f in predictor.forecast_many(siblings) if f is not None])


def mean_forecast(forecasts: Sequence[Forecast]) -> Forecast | None:
    """The workload's forecast from its pods' forecasts: the mean of theirs.

    A replica behind the same load balancer gets a share like theirs. The upper
    bound is the mean of their upper bounds, not the quantile of the mixture: a
    little low when the siblings differ widely.
    """
    if not forecasts:
        return None
    return Forecast(
        float(np.mean([f.mean for f in forecasts])),
        float(np.mean([f.upper for f in forecasts])),
        ForecastSource.WORKLOAD_HISTORY,
    )


@dataclass(frozen=True)
class ServiceDemand:
    """A service's forecast demand and the ``reference_utilization_percent`` it gives."""

    forecast: Forecast
    reference_utilization_percent: float  # percent of one reference GPU, from the upper bound

    @property
    def source(self) -> ForecastSource:
        return self.forecast.source

    def explain(self) -> str:
        f = self.forecast
        return (
            f"demand {self.reference_utilization_percent:.1f} % of a reference GPU "
            f"(forecast mean {f.mean:.1%}, p-upper {f.upper:.1%}, from {f.source})"
        )


def service_demand(
    predictor: LoadPredictor,
    own: Series | None = None,
    workload: Sequence[Series] = (),
    *,
    declared_percent: float | None = None,
    prior: Forecast = DEFAULT_PRIOR,
    measured_speed: float = 1.0,
    min_own_samples: int | None = None,
) -> ServiceDemand:
    """A service's demand: own history, else its workload's, else declared, else the prior.

    ``measured_speed`` is the speed, relative to the reference GPU, of the GPU the
    history was measured on: a pod keeping a GPU twice as fast as the reference
    40 % busy would keep the reference 80 % busy, so the demand is upper * speed.
    The history must hold at least ``min_own_samples`` (default: the horizon) to be
    trusted over the workload's.
    """
    own_forecast = predictor.forecast(own) if own is not None and len(own) else None
    trusted = own is not None and len(own) >= own_samples_needed(predictor, min_own_samples)
    siblings = [] if trusted else [s for s in workload if len(s)]
    return demand_from_forecasts(
        own_forecast,
        [f for f in predictor.forecast_many(siblings) if f is not None],
        own_trusted=trusted,
        declared_percent=declared_percent,
        prior=prior,
        measured_speed=measured_speed,
    )


def own_samples_needed(predictor: LoadPredictor, min_own_samples: int | None = None) -> int:
    """How many samples a pod's own history needs to be trusted over its workload's."""
    needed = predictor.config.horizon_steps if min_own_samples is None else min_own_samples
    return max(needed, 1)


def demand_from_forecasts(
    own: Forecast | None,
    workload: Sequence[Forecast],
    *,
    own_trusted: bool,
    declared_percent: float | None = None,
    prior: Forecast = DEFAULT_PRIOR,
    measured_speed: float = 1.0,
) -> ServiceDemand:
    """:func:`service_demand` from forecasts already made (the Lepton scheduler makes them off the
    request path): own when trusted, else the workload's mean, else a short own history,
    else declared, else the prior."""
    if measured_speed <= 0 or not math.isfinite(measured_speed):
        raise ValueError(f"measured_speed must be a positive number, got {measured_speed}")
    forecast = own if own_trusted else None
    if forecast is None:
        forecast = mean_forecast(workload) or own  # a short history beats none
    if forecast is not None:
        percent = min(100.0, forecast.upper * measured_speed * 100.0)
        return ServiceDemand(forecast, percent)
    if declared_percent is not None:
        if not 0 <= declared_percent <= 100 or not math.isfinite(declared_percent):
            raise ValueError(
                f"declared reference utilisation must be 0..100 percent, got {declared_percent}"
            )
        share = declared_percent / 100.0
        return ServiceDemand(Forecast(share, share, ForecastSource.DECLARED), declared_percent)
    return ServiceDemand(prior, min(100.0, prior.upper * 100.0))


def hints_with_forecast(
    hints: JobHints,
    predictor: LoadPredictor,
    own: Series | None = None,
    workload: Sequence[Series] = (),
    *,
    declared: bool,
    measured_speed: float = 1.0,
) -> tuple[JobHints, ServiceDemand | None]:
    """A service's hints with its demand (``u_ref``) from its forecast upper bound.

    Where the pod or its workload has history, the forecast p90 is the demand the
    energy model and the fit below the target utilisation use, whatever the pod
    declares: measured load beats a guess. Without history the declared value stays
    (``declared``: the pod carries ``lepton.dev/reference-utilization-percent``), else
    the prior. Batch work keeps its GPUs fully busy and is returned as it is, with None.
    """
    if not hints.is_service:
        return hints, None
    demand = service_demand(
        predictor,
        own,
        workload,
        declared_percent=hints.reference_utilization_percent if declared else None,
        measured_speed=measured_speed,
    )
    return with_demand(hints, demand), demand


def with_demand(hints: JobHints, demand: ServiceDemand) -> JobHints:
    """A service's hints with ``u_ref`` set to its demand."""
    return replace(hints, reference_utilization_percent=demand.reference_utilization_percent)


# Baselines every forecast is scored against, on the same rows: what a scheduler
# could do without a model. Each gives its value as both the mean and the upper bound.
LAST_VALUE = "last value"
EWM = "exponentially weighted mean"
ROLLING_P90 = "own rolling p90"
ROLLING_MEAN = "own rolling mean"
BASELINES = (LAST_VALUE, EWM, ROLLING_P90, ROLLING_MEAN)
MODEL = "model"
EWM_ALPHAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)  # the EWM baseline's, best on training rows
# The rolling mean's window in samples (the last is the whole history), best on training rows.
MEAN_WINDOWS = (5, 15, 30, 60, 120, 240, 1_000_000)


class Split(StrEnum):
    """How held-out rows are chosen."""

    LATER_IN_TIME = "later in time"  # every series cut at one moment: train before, test after
    UNSEEN_SERIES = "unseen series"  # some series held out whole: a new Deployment's pods
    # Held out whole AND later in time: trained on the other series before the cut, tested on
    # the held-out ones after it. What the Lepton scheduler faces: a new pod, forecast from
    # siblings' past only. UNSEEN_SERIES trains on siblings' rows of the very hours it tests (their
    # horizons are the test rows' future): where pods move together, that leaks.
    UNSEEN_LATER = "unseen series, later in time"


@dataclass(frozen=True)
class Scores:
    """One forecaster on the test rows: mean absolute error, and its upper bound's quality."""

    mae: float  # of the horizon's mean
    upper_coverage: float  # share of the horizon's samples at or below the upper bound
    pinball: float  # quantile (pinball) loss of the upper bound over the horizon's samples

    def as_dict(self) -> dict[str, float]:
        return {"mae": self.mae, "upper_coverage": self.upper_coverage, "pinball": self.pinball}


def score(rows: Rows, mean: Array, upper: Array, quantile: float) -> Scores:
    """MAE of ``mean`` against each row's horizon mean; coverage and pinball loss of ``upper``."""
    if not len(rows):
        return Scores(math.nan, math.nan, math.nan)
    error = rows.future - upper[:, None]  # positive: the sample was above the bound
    pinball = np.maximum(quantile * error, (quantile - 1.0) * error)
    return Scores(
        float(np.abs(mean - rows.future_mean).mean()),
        float((error <= 1e-12).mean()),
        float(pinball.mean()),
    )


def baseline_forecasts(
    history: Sequence[Series],
    rows: Rows,
    config: PredictorConfig,
    ewm_alpha: float,
    mean_window: int | None = None,
) -> dict[str, Array]:
    """Each baseline's value at each row, from the samples up to the row only.

    The EWM is the adjusted one (the weighted mean of the samples seen): started at
    the first value, it leans on that one sample for the first ~1/alpha samples,
    a handicap on young series (every row of a new pod's first hours).
    """
    window = mean_window or config.scale_window
    out = {name: np.empty(len(rows)) for name in BASELINES}
    for i in np.unique(rows.series).tolist():
        at = rows.series == i
        values, position = history[i].values, rows.position[at]
        out[LAST_VALUE][at] = values[position]
        out[EWM][at] = _ewma(values, ewm_alpha, adjusted=True)[position]
        out[ROLLING_P90][at] = window_quantile(values, config.scale_window, config.quantile)[0][
            position
        ]
        out[ROLLING_MEAN][at] = _window_mean(values, window)[0][position]
    return out


def best_ewm_alpha(history: Sequence[Series], rows: Rows, config: PredictorConfig) -> float:
    """The EWM baseline's smoothing, chosen on the training rows: as strong as it can be."""
    if not len(rows):
        return EWM_ALPHAS[0]

    def mae(alpha: float) -> float:
        ewm = baseline_forecasts(history, rows, config, alpha)[EWM]
        return float(np.abs(ewm - rows.future_mean).mean())

    return min(EWM_ALPHAS, key=mae)


def best_mean_window(history: Sequence[Series], rows: Rows, config: PredictorConfig) -> int:
    """The rolling mean baseline's window, chosen on the training rows."""
    if not len(rows):
        return config.scale_window

    def mae(window: int) -> float:
        mean = baseline_forecasts(history, rows, config, 1.0, window)[ROLLING_MEAN]
        return float(np.abs(mean - rows.future_mean).mean())

    return min(MEAN_WINDOWS, key=mae)


@dataclass(frozen=True)
class Evaluation:
    """The model and every baseline, scored on the same held-out rows of one split."""

    split: Split
    scores: dict[str, Scores]  # MODEL and each of BASELINES
    test_rows: int
    train_rows: int
    ewm_alpha: float
    test_series: int = 0
    rows: Rows | None = None  # the test rows, and each forecaster's (mean, upper) on them
    forecasts: dict[str, tuple[Array, Array]] = field(default_factory=dict)
    mean_window: int = 0  # the rolling mean baseline's, chosen on the training rows

    @property
    def model_mae(self) -> float:
        return self.scores[MODEL].mae

    @property
    def last_value_mae(self) -> float:
        return self.scores[LAST_VALUE].mae

    @property
    def upper_coverage(self) -> float:
        return self.scores[MODEL].upper_coverage

    @property
    def best_baseline(self) -> str:
        return min(BASELINES, key=lambda name: self.scores[name].mae)

    def mae_ratio(self, baseline: str | None = None) -> float:
        """Model MAE over a baseline's (default: the best baseline's); below 1 the model wins."""
        reference = self.scores[baseline or self.best_baseline].mae
        return self.model_mae / reference if reference else math.nan

    @property
    def improvement(self) -> float:
        """Fraction of the last value's error the model removes (negative: worse)."""
        if not self.last_value_mae:
            return 0.0
        return 1.0 - self.model_mae / self.last_value_mae


def utilization_csv(lines: Iterable[str]) -> dict[str, Series]:
    """Per-pod series from ``timestamp_anon,value,container_ip`` rows (value in percent).

    The format of Alibaba's GenAI serving trace (``bench/data/utilization/``), so that
    any other pod utilisation history in it can be evaluated the same way.
    """
    points: dict[str, list[tuple[float, float]]] = {}
    for row in csv.DictReader(lines):
        points.setdefault(row["container_ip"], []).append(
            (float(row["timestamp_anon"]), float(row["value"]) / 100.0)
        )
    return {name: Series.of(p) for name, p in points.items()}


def split_in_time(
    history: Mapping[str, Series], train_fraction: float
) -> tuple[dict[str, Series], dict[str, Series]]:
    """Each series cut at the same moment: the past to train on, the rest to test."""
    stamps = np.concatenate([s.timestamps for s in history.values() if len(s)])
    cut = float(np.quantile(stamps, train_fraction)) if len(stamps) else 0.0
    train, test = {}, {}
    for name, s in history.items():
        before = s.timestamps <= cut
        train[name] = Series(s.timestamps[before], s.values[before])
        test[name] = Series(s.timestamps[~before], s.values[~before])
    return train, test


def split_series(names: Sequence[str], test_fraction: float, seed: int = 0) -> set[str]:
    """A seeded share of the series, held out whole (at least one; one is always kept)."""
    count = min(max(1, round(len(names) * test_fraction)), len(names) - 1)
    rng = np.random.default_rng(seed)
    return {names[i] for i in rng.choice(len(names), max(count, 0), replace=False).tolist()}


def evaluate(
    history: Mapping[str, Series],
    config: PredictorConfig | None = None,
    train_fraction: float = 0.7,
    split: Split = Split.LATER_IN_TIME,
    seed: int = 0,
) -> Evaluation:
    """Train on one part of the history; score the model and every baseline on the rest.

    Later in time: each series is cut at the moment ``train_fraction`` of all samples
    lie before; a test row sees the whole history before it (the training part too),
    as the Lepton scheduler would, and its horizon lies entirely after the cut. Unseen series:
    ``1 - train_fraction`` of the series are held out whole and every row of theirs is
    a test row. The EWM baseline's smoothing is chosen on the training rows.
    """
    predictor = LoadPredictor(config or PredictorConfig())
    config = predictor.config
    names = list(history)
    series = [history[n] for n in names]
    rows = rows_of(series, config)
    if split is Split.LATER_IN_TIME:
        train_part, _ = split_in_time(history, train_fraction)
        cut_at = np.array([len(train_part[n]) for n in names], dtype=np.int64)
        train_rows = rows_of([train_part[n] for n in names], config)
        test = rows.position >= cut_at[rows.series] - 1
    elif split is Split.UNSEEN_SERIES:
        held = split_series(names, 1.0 - train_fraction, seed)
        held_index = np.array([n in held for n in names])
        test = held_index[rows.series]
        train_rows = _select(rows, ~test)
    else:
        held = split_series(names, 1.0 - train_fraction, seed)
        held_index = np.array([n in held for n in names])
        train_part, _ = split_in_time(history, train_fraction)
        cut_at = np.array([len(train_part[n]) for n in names], dtype=np.int64)
        before = rows_of([train_part[n] for n in names], config)
        train_rows = _select(before, ~held_index[before.series])
        test = held_index[rows.series] & (rows.position >= cut_at[rows.series] - 1)
    if len(train_rows) >= 2 * rows.x.shape[1]:
        predictor.fit_rows(train_rows)
    alpha = best_ewm_alpha(series, train_rows, config)
    window = best_mean_window(series, train_rows, config)
    test_rows = _select(rows, test)
    forecasts = {
        name: (value, value)
        for name, value in baseline_forecasts(series, test_rows, config, alpha, window).items()
    }
    if predictor.trained:
        forecasts[MODEL] = predictor.forecast_rows(test_rows.x, test_rows.scale)
    else:
        forecasts[MODEL] = forecasts[LAST_VALUE]
    scores = {
        name: score(test_rows, mean, upper, config.quantile)
        for name, (mean, upper) in forecasts.items()
    }
    return Evaluation(
        split,
        scores,
        len(test_rows),
        predictor.trained_rows,
        alpha,
        len(np.unique(test_rows.series)),
        test_rows,
        forecasts,
        window,
    )


def _select(rows: Rows, keep: np.ndarray[Any, np.dtype[np.bool_]]) -> Rows:
    return Rows(
        rows.x[keep],
        rows.scale[keep],
        rows.future_mean[keep],
        rows.future[keep],
        rows.series[keep],
        rows.position[keep],
        rows.time[keep],
    )
