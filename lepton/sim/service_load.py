"""Measured service load for the simulator: a history to forecast from, and what then happens.

The openb trace says how many GPUs a service holds, not how busy it keeps them.
Given measured per-pod utilisation (the GenAI serving trace's CSV,
:func:`lepton.core.predictor.utilization_csv`), each service pod of the trace is
given one measured series, cut in time: the *history* is what Prometheus would
hold when the pod is placed, the *future* is how it then runs. The demand the
policy sees comes from the same forecasting code as the Lepton scheduler's
(:func:`lepton.core.predictor.demand_from_forecasts`), from the history only;
what the pod draws and whether its GPU is pushed above the service target come
from the future. Without a forecast the policy sees the declared demand
(``SimConfig.service_reference_utilization_percent``) and the pod still runs at
its measured load, so the two runs differ only in what placement knew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lepton.core.predictor import (
    ForecastSource,
    LoadPredictor,
    PredictorConfig,
    Series,
    demand_from_forecasts,
)

from .trace import SERVICE, TracePod

# One sample a minute, the next hour: the load predictor benchmark's utilisation config.
SERVICE_PREDICTOR = PredictorConfig(
    step_seconds=60.0, horizon_steps=60, time_of_day=False, max_training_rows=20_000, max_iter=60
)
HISTORY_FRACTION = 0.7  # of each measured series: the history; the rest is how the pod runs


@dataclass(frozen=True)
class ServiceLoad:
    """One service pod's utilisation of a reference GPU, whole-GPU (0..1)."""

    series: str  # the measured series it was given
    demand_percent: float  # forecast upper bound from the history, % of a reference GPU
    source: ForecastSource
    actual_mean: float  # mean of the future: what it draws
    actual_upper: float  # the future's upper quantile: the headroom it needed


def cut(series: Series, fraction: float = HISTORY_FRACTION) -> tuple[Series, Series]:
    """The first ``fraction`` of the samples, and the rest."""
    at = round(len(series) * fraction)
    return series.head(at), Series(series.timestamps[at:], series.values[at:])


def service_loads(
    pods: Sequence[TracePod],
    kinds: Sequence[str],
    utilization: Mapping[str, Series],
    *,
    seed: int = 0,
    config: PredictorConfig = SERVICE_PREDICTOR,
) -> dict[str, ServiceLoad]:
    """Each GPU service pod's load, keyed by pod name, from a seeded draw of the series.

    The predictor is trained on the histories only (never a future sample).
    """
    names = sorted(n for n, s in utilization.items() if len(s) >= 2 * config.horizon_steps)
    if not names:
        return {}
    parts = {n: cut(utilization[n]) for n in names}
    predictor = LoadPredictor(config)
    predictor.fit([history for history, _ in parts.values()])
    forecasts = dict(zip(names, predictor.forecast_many([parts[n][0] for n in names]), strict=True))
    per_series: dict[str, ServiceLoad] = {}
    for name in names:
        forecast = forecasts[name]
        demand = demand_from_forecasts(forecast, [], own_trusted=True)
        future = parts[name][1].values
        per_series[name] = ServiceLoad(
            name,
            demand.reference_utilization_percent,
            demand.source,
            float(future.mean()),
            float(np.quantile(future, config.quantile)),
        )
    rng = np.random.default_rng([seed, 19])
    service_pods = [p for p, k in zip(pods, kinds, strict=True) if k == SERVICE and p.num_gpu > 0]
    drawn = rng.integers(0, len(names), size=len(service_pods))
    return {p.name: per_series[names[int(d)]] for p, d in zip(service_pods, drawn, strict=True)}
