"""The simulator's hook: a service with a measured history is placed by its forecast."""

from __future__ import annotations

import math

import numpy as np

from lepton.core.predictor import ForecastSource, PredictorConfig, Series
from lepton.sim import PolicyName, SimConfig, TraceNode, TracePod, simulate
from lepton.sim.service_load import cut, service_loads
from lepton.sim.trace import workload_kind

# small and quick: the model's quality is the predictor benchmark's business
FAST = PredictorConfig(step_seconds=60.0, horizon_steps=60, time_of_day=False, max_iter=10)


def busy_series(level: float, minutes: int = 600) -> Series:
    return Series.of(
        [
            (60.0 * k, level + 0.05 * math.sin(k / 7) + 0.03 * math.sin(k / 2.1))
            for k in range(minutes)
        ]
    )


def test_each_service_gets_a_forecast_from_its_history_only() -> None:
    pods = [
        TracePod(f"s{i}", 4000, 16_384, 1, 1000, (), 0.0, 0.0, 3600.0, "LS") for i in range(5)
    ] + [TracePod("b", 4000, 16_384, 1, 1000, (), 0.0, 0.0, 3600.0, "BE")]
    kinds = [workload_kind(p) for p in pods]
    history = {"busy": busy_series(0.8), "quiet": busy_series(0.1)}
    loads = service_loads(pods, kinds, history, seed=0, config=FAST)
    assert set(loads) == {f"s{i}" for i in range(5)}  # batch pods run flat out, no history
    for load in loads.values():
        _, future = cut(history[load.series])
        assert load.source is ForecastSource.OWN_HISTORY
        assert load.actual_mean == float(future.values.mean())
        assert np.isclose(load.demand_percent, 100 * load.actual_upper, atol=15)
    # a history that ends in a burst the future never sees: the forecast must not know it
    burst = busy_series(0.1)
    values = burst.values.copy()
    values[int(len(values) * 0.7) :] = 0.95
    late = {"late": Series(burst.timestamps, values)}
    (only,) = service_loads(pods[:1], kinds[:1], late, seed=0, config=FAST).values()
    assert only.demand_percent < 40 and only.actual_upper > 0.9


def test_a_busy_service_is_kept_off_a_small_gpu_by_its_forecast_not_its_declaration() -> None:
    """Declared 30 %, measured ~80 %: without the hook Lepton puts it on the T4 and the T4
    runs above target; with it, the forecast p90 keeps it on the H100."""
    pods = [TracePod("s", 4000, 16_384, 1, 1000, (), 0.0, 0.0, 3600.0, "LS")]
    nodes = [
        TraceNode("t4", 128_000, 262_144, 1, "T4"),
        TraceNode("h100", 8000, 262_144, 1, "H100"),
    ]
    loads = service_loads(
        pods, [workload_kind(pods[0])], {"busy": busy_series(0.8)}, seed=0, config=FAST
    )
    runs = {}
    for hook in (False, True):
        config = SimConfig(regime="always_on", window="run", forecast_services=hook)
        runs[hook] = simulate(pods, nodes, PolicyName.LEPTON_EFFICIENCY, config, loads)
    assert runs[False].placements[0].node == "t4" and runs[False].placements[0].above_target
    assert runs[True].placements[0].node == "h100" and not runs[True].placements[0].above_target
    assert runs[True].metrics()["servicesAboveTarget"] == 0
    assert runs[False].metrics()["servicesAboveTarget"] == 1
