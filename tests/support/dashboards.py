"""Reading the Grafana dashboards as Grafana would: shared by the dashboard tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_FILES = sorted((REPO / "deploy" / "dashboards").glob("*.json"))
# What Grafana puts in place of its built-in variables and of "All" in a multi-value variable.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def fill_variables(expr: str, board: dict[str, Any]) -> str:
    """The query as Grafana sends it with every variable set to All (regex ``.*``)."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            expr = expr.replace(f"${variable['name']}", variable["allValue"])
    return expr


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]
