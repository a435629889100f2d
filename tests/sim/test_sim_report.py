"""The simulation study: paired savings over seeds, significance, goals, the table, the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lepton.sim import SimConfig, TraceNode, TracePod
from lepton.sim.report import (
    decomposition,
    goals,
    headline,
    markdown_table,
    run_study,
    write_outputs,
)


def _trace() -> tuple[list[TracePod], list[TraceNode]]:
    pods = [
        TracePod(
            f"p{i}",
            4000,
            16_384,
            1,
            1000,
            (),
            i * 600.0,
            i * 600.0,
            i * 600.0 + 3600,
            ("LS", "BE")[i % 2],
        )
        for i in range(12)
    ]
    nodes = [TraceNode(f"n{i}", 64_000, 262_144, 4, ("A40", "T4")[i % 2]) for i in range(8)]
    return pods, nodes


def _study() -> dict[str, object]:
    pods, nodes = _trace()
    return run_study(
        pods,
        nodes,
        SimConfig(trace_speed=1.0),
        loads={"60%": 1.0, "85%": 0.5},
        seeds=(0, 1),
        node_count=4,
    )


def test_savings_are_paired_per_seed_and_count_only_when_the_range_excludes_zero(
    tmp_path: Path,
) -> None:
    report = _study()
    runs = {(r["load"], r["seed"], r["regime"], r["policy"]): r for r in report["runs"]}  # type: ignore[attr-defined]
    for c in report["cells"]:  # type: ignore[attr-defined]
        per_seed = [
            1
            - runs[(c["load"], s, c["regime"], c["policy"])]["energyKWh"]
            / runs[(c["load"], s, c["regime"], "most-allocated")]["energyKWh"]
            for s in (0, 1)
        ]
        s = c["savings"]["most-allocated"]
        assert s["mean"] == pytest.approx(sum(per_seed) / 2)
        assert s["min"] == pytest.approx(min(per_seed))
        assert s["counts"] == (min(per_seed) > 0 or max(per_seed) < 0)
        if c["policy"] == "most-allocated":
            assert s["mean"] == 0 and not s["counts"]
    assert "model estimate" in report["kind"]  # type: ignore[operator]
    assert {g["goal"].split(":")[0] for g in goals(report)} >= {"issue 12", "issue 13"}
    table = markdown_table(report)
    assert "Model estimates, not measurements" in table and "(n.s.)" in table
    assert "strongest baseline" in headline(report)
    files = write_outputs(report, tmp_path, "sim")
    assert {f.name for f in files} == {"sim.json", "sim.md", "sim_energy_vs_load.png"}
    assert json.loads((tmp_path / "sim.json").read_text())["trace"]["pods"] == 12
    assert (tmp_path / "sim_energy_vs_load.png").read_bytes()[:4] == b"\x89PNG"


def test_the_same_seeds_give_the_same_numbers() -> None:
    def strip(report: dict[str, object]) -> list[object]:
        return [
            {k: v for k, v in r.items() if k != "wallSeconds"}
            for r in report["runs"]  # type: ignore[attr-defined]
        ]

    assert strip(_study()) == strip(_study())


def test_always_on_idle_is_the_same_for_every_policy_over_the_window() -> None:
    report = _study()
    idle = {
        round(r["idleKWh"], 9)
        for r in report["runs"]  # type: ignore[attr-defined]
        if r["regime"] == "always_on" and r["load"] == "60%" and r["seed"] == 0
    }
    assert len(idle) == 1


def test_the_decomposition_chains_from_the_default_scheduler_to_lepton() -> None:
    pods, nodes = _trace()
    report = run_study(
        pods, nodes, SimConfig(trace_speed=1.0), loads={"60%": 1.0}, seeds=(0,), node_count=4
    )
    runs = {(r["regime"], r["policy"]): r["energyKWh"] for r in report["runs"]}
    for regime in ("scale_in", "always_on"):
        steps = decomposition(report, "60%", regime)
        assert [s["to"] for s in steps] == [
            "most-allocated",
            "most-allocated-capped",
            "lepton-efficiency",
        ]
        kept = 1.0
        for s in steps:
            kept *= 1 - s["saving"]
        # one seed: the steps' savings compose to lepton-efficiency against the default
        total = 1 - runs[(regime, "lepton-efficiency")] / runs[(regime, "default-scheduler")]
        assert 1 - kept == pytest.approx(total)
    share = report["trace"]["gpuShareByModel"]  # type: ignore[index]
    assert sum(share.values()) == pytest.approx(1.0) and set(share) <= {"A40", "T4"}
    table = markdown_table(report)
    assert "Where the saving comes from (60%, scale-in)" in table
    assert "What bounds Lepton's placement" in table


def test_a_study_of_one_regime_decomposes_only_that_regime() -> None:
    # Failed before: the always-on steps were listed with a NaN saving ("+nan%").
    pods, nodes = _trace()
    report = run_study(
        pods,
        nodes,
        SimConfig(trace_speed=1.0),
        loads={"60%": 1.0},
        seeds=(0,),
        node_count=4,
        regimes=("scale_in",),
    )
    assert decomposition(report, "60%", "always_on") == []
    assert len(decomposition(report, "60%", "scale_in")) == 3
    assert "nan" not in markdown_table(report)
