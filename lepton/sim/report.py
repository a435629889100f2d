"""Running every policy on one trace and reporting the comparison: JSON, table, charts.

``lepton simulate`` and ``make bench`` (``bench/bench_simulate.py``) both call
:func:`run_policies` and :func:`write_outputs`, so the command and the benchmark
print the same table. Savings are always against the default-scheduler
emulation; every figure is a model estimate and is labelled so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engine import SimConfig, SimResult, fleet_mean_speed, simulate
from .policies import ALL_POLICIES, PolicyName
from .trace import TraceNode, TracePod

BASELINE = PolicyName.DEFAULT_SCHEDULER
# The bars set by the project (issue 7), Efficiency against the default scheduler.
BAR_SCALE_IN_SAVING = 0.20
BAR_ALWAYS_ON_SAVING = 0.08
BAR_JCT_SLOWDOWN = 0.05
REGIMES = ("scale_in", "always_on")


def run_policies(
    pods: Sequence[TracePod],
    nodes: Sequence[TraceNode],
    config: SimConfig,
    policies: Sequence[PolicyName] = ALL_POLICIES,
) -> dict[str, Any]:
    """Every policy on the same trace and fleet; always-on idle over the trace's window."""
    results: list[SimResult] = [simulate(pods, nodes, p, config) for p in policies]
    horizon = results[0].trace_end_seconds if results else 0.0
    metrics = {str(r.policy): r.metrics(common_horizon_seconds=horizon) for r in results}
    base = metrics.get(str(BASELINE))
    if base is not None:
        for m in metrics.values():
            m["vsDefaultScheduler"] = {
                **{
                    f"{regime}EnergySaving": 1
                    - m["regimes"][regime]["energyKWh"] / base["regimes"][regime]["energyKWh"]
                    for regime in REGIMES
                },
                "meanJobCompletionChange": m["meanJobCompletionSeconds"]
                / base["meanJobCompletionSeconds"]
                - 1
                if base["meanJobCompletionSeconds"]
                else 0.0,
            }
    model_map = dict(config.model_map)
    return {
        "kind": "model estimate (simulation), not a measurement",
        "assumptions": config.as_dict()
        | {
            "traceSpeedUsed": config.trace_speed or fleet_mean_speed(nodes, model_map),
            "powerCaps": {"default-scheduler/most-allocated": "None", "lepton-*": "Auto"},
        },
        "trace": {"pods": len(pods), "nodes": len(nodes), "gpus": sum(n.gpus for n in nodes)},
        "policies": metrics,
        "series": {
            str(r.policy): {
                "binStartSeconds": r.bins_seconds,
                "alwaysOnJoules": r.bins_always_on_joules,
                "scaleInJoules": r.bins_scale_in_joules,
            }
            for r in results
        },
    }


def bars(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The project's bars for Lepton Efficiency, each with its value and whether it is met."""
    eff = report["policies"].get(str(PolicyName.LEPTON_EFFICIENCY), {}).get("vsDefaultScheduler")
    if not eff:
        return {}
    return {
        "scaleInSaving>=20%": {
            "value": eff["scale_inEnergySaving"],
            "met": eff["scale_inEnergySaving"] >= BAR_SCALE_IN_SAVING,
        },
        "alwaysOnSaving>=8%": {
            "value": eff["always_onEnergySaving"],
            "met": eff["always_onEnergySaving"] >= BAR_ALWAYS_ON_SAVING,
        },
        "meanJctWorse<=5%": {
            "value": eff["meanJobCompletionChange"],
            "met": eff["meanJobCompletionChange"] <= BAR_JCT_SLOWDOWN,
        },
    }


def markdown_table(report: dict[str, Any], title: str = "") -> str:
    """A README-ready table of every policy (model estimates)."""
    a = report["assumptions"]
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [
        f"Trace: {report['trace']['pods']} pods on {report['trace']['nodes']} nodes "
        f"({report['trace']['gpus']} GPUs). Model estimates, not measurements. "
        f"Assumptions: GPU models {a['modelMap']}, trace speed "
        f"{a['traceSpeedUsed']:.3f}x A40, scale-in grace {a['scaleInGraceSeconds']:.0f} s, "
        f"deadline {a['deadlineFactor']}x trace runtime, seed {a['seed']}, "
        f"time compression {a['timeCompression']}.",
        "",
        "| policy | energy scale-in (MWh) | saving | energy always-on (MWh) | saving "
        "| Wh per GPU-h (scale-in) | node-hours (scale-in) | mean JCT (h) | change "
        "| p95 JCT (h) | mean / p95 wait (s) | deadline misses | unscheduled | sim time (s) |",
        "|" + "---|" * 14,
    ]
    for name, m in report["policies"].items():
        si, ao = m["regimes"]["scale_in"], m["regimes"]["always_on"]
        vs = m.get("vsDefaultScheduler", {})
        lines.append(
            f"| {name} | {si['energyKWh'] / 1000:,.2f} | {vs.get('scale_inEnergySaving', 0):+.1%} "
            f"| {ao['energyKWh'] / 1000:,.1f} | {vs.get('always_onEnergySaving', 0):+.2%} "
            f"| {si['whPerGpuHour']:,.0f} | {si['nodeHoursPowered']:,.0f} "
            f"| {m['meanJobCompletionSeconds'] / 3600:.2f} "
            f"| {vs.get('meanJobCompletionChange', 0):+.1%} "
            f"| {m['p95JobCompletionSeconds'] / 3600:.2f} "
            f"| {m['meanQueueingSeconds']:.0f} / {m['p95QueueingSeconds']:.0f} "
            f"| {m['deadlineMisses']} | {m['unscheduled']} | {m['wallSeconds']:.1f} |"
        )
    checks = bars(report)
    if checks:
        lines += ["", "Bars for lepton-efficiency against default-scheduler:"]
        for bar, check in checks.items():
            lines.append(f"- {bar}: {check['value']:+.2%} — {'met' if check['met'] else 'NOT met'}")
    return "\n".join(lines) + "\n"


def write_charts(report: dict[str, Any], prefix: Path) -> list[Path]:
    """Energy over time per policy (both regimes) and totals per policy, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, series in report["series"].items():
        days = [s / 86_400 for s in series["binStartSeconds"]]
        widths = [
            b - a
            for a, b in zip(series["binStartSeconds"], series["binStartSeconds"][1:], strict=False)
        ]
        width = widths[0] if widths else 86_400.0
        for ax, key in zip(axes, ("scaleInJoules", "alwaysOnJoules"), strict=True):
            # the last bin is partial: left out rather than drawn as a dip
            keep = max(1, len(days) - 1)
            kilowatts = [j / width / 1000 for j in series[key]][:keep]
            ax.plot(days[:keep], kilowatts, label=name, linewidth=1)
    axes[0].set_title("Scale-in regime: mean power per bin (model estimate)")
    axes[1].set_title("Always-on regime: mean power per bin (model estimate)")
    for ax in axes:
        ax.set_ylabel("kW")
        if ax.dataLim.ymin > 0:  # log scale: idle and busy power differ by decades
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    axes[1].set_xlabel("trace day")
    fig.tight_layout()
    path = prefix.with_name(prefix.name + "_energy_over_time.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(report["policies"])
    for ax, regime in zip(axes, REGIMES, strict=True):
        values = [report["policies"][n]["regimes"][regime]["energyKWh"] / 1000 for n in names]
        ax.bar(names, values, color=["#888", "#b98", "#6a9", "#285"][: len(names)])
        ax.set_title(f"Total energy, {regime.replace('_', '-')} (MWh, model estimate)")
        ax.tick_params(axis="x", rotation=20, labelsize=8)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:,.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    path = prefix.with_name(prefix.name + "_totals.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def write_outputs(report: dict[str, Any], out_dir: Path, name: str = "simulation") -> list[Path]:
    """``<name>.json``, ``<name>.md`` and the two PNG charts under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=1))
    md_path = out_dir / f"{name}.md"
    md_path.write_text(markdown_table(report))
    return [json_path, md_path, *write_charts(report, out_dir / name)]
