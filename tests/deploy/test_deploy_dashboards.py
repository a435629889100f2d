"""The Grafana dashboards are well formed and every query is valid PromQL.

No Grafana server is available here, so the structure Grafana relies on is checked
directly (unique ids and uids, panels on the grid without overlap, every query on the
dashboard's Prometheus datasource variable), and every ``expr`` is parsed by
``promql-parser`` after Grafana's variables are filled in as Grafana would fill them.
Whether the queries return data is checked against a real Prometheus in
``test_deploy_prometheus.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest

from tests.support.dashboards import DASHBOARD_FILES, fill_variables, load, queries

REPO = Path(__file__).resolve().parents[2]


def test_the_issue_s_six_views_are_all_there() -> None:
    titles = {load(p)["title"] for p in DASHBOARD_FILES}
    assert titles == {
        "Lepton / Cluster power and energy",
        "Lepton / Energy budgets and jobs",
        "Lepton / GPU power and limits by model",
        "Lepton / Scheduler",
        "Lepton / Exporter health",
    }
    exprs = " ".join(e for p in DASHBOARD_FILES for _, e in queries(load(p)))
    for needle in (
        "lepton_gpu_power_watts",  # cluster power
        "lepton_gpu_energy_joules_total",  # cluster energy
        "lepton_energybudget_limit_joules",  # budget use against its limit
        "leptonjob",  # energy per LeptonJob
        "lepton_gpu_power_limit_watts",  # power limit by model
        "lepton_scheduler_decisions_total",  # the Lepton scheduler's decisions
        "lepton_scheduler_request_duration_seconds_bucket",  # Lepton scheduler latency
        "lepton_exporter_up",  # exporter health
    ):
        assert needle in exprs, needle


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=[p.stem for p in DASHBOARD_FILES])
def test_dashboard_structure_is_what_grafana_expects(path: Path) -> None:
    board = load(path)
    assert board["uid"] and len(board["uid"]) <= 40
    assert board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']!r} overlaps another panel"
        occupied |= cells
        assert panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    used = set(re.findall(r"\$(\w+)", json.dumps(board["panels"])))
    undefined = {u for u in used if not u.startswith("__") and u not in variables}
    # "$1" in label_replace is a regex group, not a variable.
    assert undefined <= {"1"}, f"undefined variables: {undefined}"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=[p.stem for p in DASHBOARD_FILES])
def test_every_query_parses_as_promql(path: Path) -> None:
    board = load(path)
    exprs = queries(board) + [
        (v["name"], v["query"]["query"])
        for v in board["templating"]["list"]
        if v["type"] == "query" and not v["query"]["query"].startswith("label_values(")
    ]
    assert exprs
    for title, expr in exprs:
        try:
            promql_parser.parse(fill_variables(expr, board))
        except ValueError as error:
            pytest.fail(f"{path.name}: panel {title!r}: {error}\n{expr}")


def test_the_parser_rejects_bad_promql() -> None:
    # The parse test above means something only if the parser says no to broken queries.
    for bad in ("sum(rate(x[5m])", "rate(x)", "x{a=}", "histogram_quantile(0.9, sum by (le) x)"):
        with pytest.raises(ValueError):
            promql_parser.parse(bad)
