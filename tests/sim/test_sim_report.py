"""The simulation report: savings against the default scheduler, the table, the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lepton.sim import SimConfig, TraceNode, TracePod
from lepton.sim.report import bars, markdown_table, run_policies, write_outputs


def _trace() -> tuple[list[TracePod], list[TraceNode]]:
    pods = [
        TracePod(f"p{i}", 4000, 16_384, 1, 1000, (), i * 600.0, i * 600.0, i * 600.0 + 3600)
        for i in range(10)
    ]
    nodes = [TraceNode(f"n{i}", 64_000, 262_144, 4, ("A40", "T4")[i % 2]) for i in range(6)]
    return pods, nodes


def test_report_compares_every_policy_with_the_default_scheduler(tmp_path: Path) -> None:
    pods, nodes = _trace()
    report = run_policies(pods, nodes, SimConfig(trace_speed=1.0))
    base = report["policies"]["default-scheduler"]
    assert base["vsDefaultScheduler"]["scale_inEnergySaving"] == pytest.approx(0.0)
    eff = report["policies"]["lepton-efficiency"]
    expected = 1 - (
        eff["regimes"]["scale_in"]["energyKWh"] / base["regimes"]["scale_in"]["energyKWh"]
    )
    assert eff["vsDefaultScheduler"]["scale_inEnergySaving"] == pytest.approx(expected)
    assert set(bars(report)) == {"scaleInSaving>=20%", "alwaysOnSaving>=8%", "meanJctWorse<=5%"}
    assert "model estimate" in report["kind"]

    table = markdown_table(report)
    assert all(name in table for name in report["policies"])
    assert "Model estimates, not measurements" in table

    files = write_outputs(report, tmp_path, "sim")
    assert {f.name for f in files} == {
        "sim.json",
        "sim.md",
        "sim_energy_over_time.png",
        "sim_totals.png",
    }
    assert json.loads((tmp_path / "sim.json").read_text())["trace"]["pods"] == len(pods)
    assert (tmp_path / "sim_totals.png").read_bytes()[:4] == b"\x89PNG"


def test_always_on_idle_is_the_same_for_every_policy_over_the_trace_window() -> None:
    pods, nodes = _trace()
    report = run_policies(pods, nodes, SimConfig(trace_speed=1.0))
    idle = {m["regimes"]["always_on"]["idleKWh"] for m in report["policies"].values()}
    assert len({round(v, 9) for v in idle}) == 1
