"""docs/metrics.md documents exactly the metrics the exporter serves, with their types."""

from __future__ import annotations

import re
from pathlib import Path

from lepton_exporter.metrics import METRICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(lepton_[a-z_]+)` \| (gauge|counter) \|", re.MULTILINE)


def test_every_served_metric_is_documented_with_its_type_and_nothing_else() -> None:
    documented = {name: kind for name, kind in ROW.findall(DOC.read_text())}
    served = {name: kind for name, (kind, _) in METRICS.items()}
    assert documented == served


def test_counters_end_in_total_and_gauges_carry_a_unit() -> None:
    for name, (kind, _) in METRICS.items():
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert name.endswith(("_watts", "_ratio", "_celsius", "_hertz", "_up")), name
