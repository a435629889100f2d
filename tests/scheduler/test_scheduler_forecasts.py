"""Load forecasts: Prometheus history in, predicted load out, hot nodes avoided."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from lepton_scheduler.app import SchedulerConfig
from lepton_scheduler.history import HistoryError, PrometheusHistory

from lepton.core.predictor import PredictorConfig, Series
from tests.support.scheduler import (
    FLEET,
    NOW,
    extender_args,
    fleet_cache,
    keep_awake,
    lepton_pod,
    serve,
)

ALL = [n[0] for n in FLEET]
STEP = 300.0


class ScriptedHistory:
    """A HistorySource whose nodes follow set utilisation patterns."""

    def __init__(self, levels: Mapping[str, float]) -> None:
        self.levels = levels
        self.calls = 0

    def node_utilization(
        self, start: datetime, end: datetime, step_seconds: float
    ) -> Mapping[str, Series]:
        self.calls += 1
        n = int((end - start).total_seconds() / step_seconds)
        t0 = start.timestamp()
        return {
            node: Series.of(
                [(t0 + i * step_seconds, level + 0.05 * math.sin(i / 5)) for i in range(n)]
            )
            for node, level in self.levels.items()
        }


def test_nodes_whose_history_predicts_high_load_are_avoided(make_server: Any) -> None:
    cache = fleet_cache()
    keep_awake(cache, *ALL)
    history = ScriptedHistory({"a40-0": 0.95, "a40-1": 0.1})
    config = SchedulerConfig(predictor=PredictorConfig(max_iter=20), history_seconds=6 * 3600)
    server = make_server(cache, history=history, config=config)
    server.scheduler.refresh_forecasts(retrain=True)
    assert cache.forecasts["a40-0"] > 0.8 and cache.forecasts["a40-1"] < 0.3
    scores = {
        e["Host"]: e["Score"]
        for e in server.post("prioritize", extender_args(lepton_pod(), ["a40-0", "a40-1"])).json()
    }
    assert scores["a40-1"] > scores["a40-0"]
    explained = server.get("/explain", params={"pod": "ml/train-abc12"}).json()
    hot = next(n for n in explained["nodes"] if n["node"] == "a40-0")
    assert hot["predictedUtilization"] > 0.8 and hot["contentionSlowdown"] > 1
    metrics = server.get("/metrics").text
    assert re.search(
        r'lepton_scheduler_predictor_trainings_total\{outcome="trained"\} [1-9]', metrics
    )
    assert 'lepton_scheduler_degraded{reason="no_forecast"} 0.0' in metrics


def test_history_outage_keeps_the_last_forecasts_and_reports_degraded(make_server: Any) -> None:
    class Broken:
        def node_utilization(self, *args: Any) -> Mapping[str, Series]:
            raise HistoryError("Prometheus at http://nowhere did not answer")

    cache = fleet_cache()
    cache.set_forecasts({"a40-0": 0.5})
    server = make_server(cache, history=Broken())
    server.scheduler.refresh_forecasts(retrain=True)
    assert cache.forecasts == {"a40-0": 0.5}
    assert 'lepton_scheduler_degraded{reason="no_forecast"} 1.0' in server.get("/metrics").text


@pytest.fixture
def fake_prometheus() -> Any:
    seen: list[Mapping[str, str]] = []

    async def query_range(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        if "bad" in request.query["query"]:
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400
            )
        start = float(request.query["start"])
        return web.json_response(
            {
                "status": "success",
                "data": {
                    "resultType": "matrix",
                    "result": [
                        {
                            "metric": {"node": "a40-0"},
                            "values": [[start, "0.5"], [start + 300, "0.7"], [start + 600, "NaN"]],
                        },
                        {"metric": {}, "values": [[start, "1"]]},
                    ],
                },
            }
        )

    app = web.Application()
    app.router.add_get("/api/v1/query_range", query_range)
    url, stop = serve(app)
    yield url, seen
    stop()


def test_prometheus_history_reads_a_range_query_per_node(fake_prometheus: Any) -> None:
    url, seen = fake_prometheus
    history = PrometheusHistory(url).node_utilization(NOW - timedelta(hours=1), NOW, STEP)
    assert list(history) == ["a40-0"]
    assert list(history["a40-0"].values) == [0.5, 0.7]  # NaN dropped
    assert seen[0]["query"] == "avg by (node) (lepton_gpu_utilization_ratio)"
    assert float(seen[0]["step"]) == STEP


def test_prometheus_errors_say_what_prometheus_said(fake_prometheus: Any) -> None:
    url, _ = fake_prometheus
    with pytest.raises(HistoryError, match=r"did not answer|parse error"):
        PrometheusHistory(url, query="bad(").node_utilization(NOW - timedelta(hours=1), NOW, STEP)
    with pytest.raises(HistoryError, match="did not answer"):
        PrometheusHistory("http://127.0.0.1:9").node_utilization(NOW, NOW, STEP)
