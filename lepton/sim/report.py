"""Running every policy on one trace at several loads, seeds and both regimes; the report.

``lepton simulate`` and ``make bench`` (``bench/bench_simulate.py``) both call
:func:`run_study` and :func:`write_outputs`, so the command and the benchmark
print the same table.

One *cell* is (policy, load level, regime). Each seed draws its own stratified
150-node (or ``node_count``) fleet sample and its own tie-breaks; every policy of
a seed replays the same pods on the same fleet, so savings are paired: worked
out per seed, then reported as mean and range. A saving *counts* only where its
range over the seeds excludes zero. Every figure is a model estimate.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from .engine import REGIMES, SimConfig, simulate
from .policies import ALL_POLICIES, BASELINES, PolicyName
from .trace import TraceNode, TracePod, sample_nodes, scale_arrivals

# The load levels: the default scheduler's mean GPU allocation to reach.
DEFAULT_LOAD_TARGETS: Mapping[str, float] = {"30%": 0.30, "60%": 0.60, "85%": 0.85}
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
# The goals (issues 12 and 13), lepton-efficiency against the named baseline.
GOALS_SCALE_IN_60 = {"most-allocated": 0.15, "most-allocated-capped": 0.05}
GOAL_ALWAYS_ON_85 = {"default-scheduler": 0.08}
GOAL_JCT_SLOWDOWN = 0.03
METRICS = (
    "energyKWh",
    "idleKWh",
    "dynamicKWh",
    "nodeHoursPowered",
    "meanGpuAllocation",
    "gpuFillOfPowered",
    "batchDynamicKWh",
    "serviceDynamicKWh",
    "energyKWhClipped",
    "meanBatchCompletionSeconds",
    "p95BatchCompletionSeconds",
    "meanQueueingSeconds",
    "p95QueueingSeconds",
    "servicesAboveTarget",
    "serviceGpuHoursAboveTargetShare",
    "deadlineMisses",
    "unscheduled",
    "nodesAdded",
    "wallSeconds",
)


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def _fleet(nodes: Sequence[TraceNode], count: int | None, seed: int) -> list[TraceNode]:
    return sample_nodes(nodes, count, seed=seed) if count else list(nodes)


def mean_allocation(
    pods: Sequence[TracePod],
    nodes: Sequence[TraceNode],
    factor: float,
    config: SimConfig,
    node_count: int | None,
) -> float:
    """The default scheduler's mean GPU allocation at one arrival scale (seed ``config.seed``)."""
    fleet = _fleet(nodes, node_count, config.seed)
    result = simulate(scale_arrivals(pods, factor), fleet, PolicyName.DEFAULT_SCHEDULER, config)
    return float(result.metrics()["meanGpuAllocation"])


def calibrate_load(
    pods: Sequence[TracePod],
    nodes: Sequence[TraceNode],
    target: float,
    config: SimConfig,
    node_count: int | None,
    steps: int = 5,
    start: float = 0.01,
    tolerance: float = 0.015,
) -> tuple[float, float]:
    """The arrival scale at which the default scheduler's mean GPU allocation is ``target``.

    The allocation falls as the scale grows, roughly as a power of it: a secant
    search on log(allocation) against log(scale) (a first step of slope -1), the
    scale kept within 1e-4 and 1, stopping within ``tolerance``; returns the
    (scale, allocation reached) closest to the target.
    """
    low, high = math.log(1e-4), 0.0
    points: list[tuple[float, float]] = []  # (log scale, log allocation)
    x = min(high, max(low, math.log(start)))
    best: tuple[float, float] | None = None
    for _ in range(steps):
        reached = mean_allocation(pods, nodes, math.exp(x), config, node_count)
        if best is None or abs(reached - target) < abs(best[1] - target):
            best = (math.exp(x), reached)
        if abs(reached - target) <= tolerance or reached <= 0:
            break
        points.append((x, math.log(reached)))
        slope = -1.0
        if len(points) >= 2 and points[-1][0] != points[-2][0]:
            (x0, y0), (x1, y1) = points[-2], points[-1]
            slope = min(-0.1, max(-3.0, (y1 - y0) / (x1 - x0)))
        next_x = min(high, max(low, x + (math.log(target) - points[-1][1]) / slope))
        if next_x == x:
            break
        x = next_x
    assert best is not None
    return best


def _run_one(
    args: tuple[Sequence[TracePod], Sequence[TraceNode], PolicyName, SimConfig],
) -> dict[str, Any]:
    pods, fleet, policy, config = args
    return simulate(pods, fleet, policy, config).metrics()


def run_study(
    pods: Sequence[TracePod],
    nodes: Sequence[TraceNode],
    config: SimConfig,
    *,
    policies: Sequence[PolicyName] = ALL_POLICIES,
    loads: Mapping[str, float] | None = None,
    load_targets: Mapping[str, float] | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    regimes: Sequence[str] = REGIMES,
    node_count: int | None = 150,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every policy x load x regime x seed; the report (JSON-ready).

    ``loads`` gives arrival scales by label; without it, ``load_targets`` (label:
    the default scheduler's mean GPU allocation to reach) are found by
    :func:`calibrate_load` on seed ``seeds[0]`` in the scale-in regime.
    """
    say = progress or (lambda _: None)
    calibration: dict[str, dict[str, float]] = {}
    if loads is None:
        targets = load_targets or DEFAULT_LOAD_TARGETS
        calibration_config = dataclasses.replace(config, seed=seeds[0], regime="scale_in")
        chosen: dict[str, float] = {}
        previous: tuple[float, float] | None = None
        for label, target in targets.items():
            # from the last level found, as if the allocation went as 1 / scale
            guess = previous[0] * previous[1] / target if previous and previous[1] else 0.01
            factor, reached = calibrate_load(
                pods, nodes, target, calibration_config, node_count, start=guess
            )
            previous = (factor, reached)
            chosen[label] = factor
            calibration[label] = {"target": target, "arrivalScale": factor, "reached": reached}
            say(
                f"load {label}: arrival scale {factor:.5f} -> "
                f"default-scheduler allocation {reached:.1%}"
            )
        loads = chosen
    jobs = []
    keys = []
    gpus_by_model: dict[str, float] = {}
    for seed in seeds:
        for n in _fleet(nodes, node_count, seed):
            model = config.model_map.get(n.model, n.model)
            gpus_by_model[model] = gpus_by_model.get(model, 0.0) + n.gpus / len(seeds)
    for label, factor in loads.items():
        scaled = scale_arrivals(pods, factor)
        for seed in seeds:
            fleet = _fleet(nodes, node_count, seed)
            for regime in regimes:
                run_config = dataclasses.replace(config, seed=seed, regime=regime)
                for policy in policies:
                    jobs.append((scaled, fleet, policy, run_config))
                    keys.append((label, seed, regime, str(policy)))
    say(
        f"{len(jobs)} runs ({len(policies)} policies x {len(loads)} loads x "
        f"{len(seeds)} seeds x {len(regimes)} regimes)"
    )
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_run_one, jobs, chunksize=4))
    else:
        results = [_run_one(job) for job in jobs]
    runs = {key: m for key, m in zip(keys, results, strict=True)}
    cells: list[dict[str, Any]] = []
    for label in loads:
        for regime in regimes:
            for policy in policies:
                per_seed = [runs[(label, s, regime, str(policy))] for s in seeds]
                cell: dict[str, Any] = {
                    "policy": str(policy),
                    "load": label,
                    "regime": regime,
                    **{k: _stats([float(m[k]) for m in per_seed]) for k in METRICS},
                    "savings": {},
                    "batchCompletionChange": {},
                }
                for base_policy in (b for b in BASELINES if b in policies):
                    base = [runs[(label, s, regime, str(base_policy))] for s in seeds]
                    savings = [
                        1 - m["energyKWh"] / b["energyKWh"] if b["energyKWh"] else 0.0
                        for m, b in zip(per_seed, base, strict=True)
                    ]
                    jct = [
                        m["meanBatchCompletionSeconds"] / b["meanBatchCompletionSeconds"] - 1
                        if b["meanBatchCompletionSeconds"]
                        else 0.0
                        for m, b in zip(per_seed, base, strict=True)
                    ]
                    stats = _stats(savings)
                    stats["counts"] = stats["min"] > 0 or stats["max"] < 0
                    cell["savings"][str(base_policy)] = stats
                    cell["batchCompletionChange"][str(base_policy)] = _stats(jct)
                cells.append(cell)
    return {
        "kind": "model estimate (simulation), not a measurement",
        "assumptions": config.as_dict() | {"seeds": list(seeds), "nodeCount": node_count},
        "trace": {
            "pods": len(pods),
            "fleetNodes": len(nodes),
            "sampledNodes": node_count or len(nodes),
            # the sampled fleets' GPUs by model (mean over the seeds): where model
            # choice has room, and where one model is most of the fleet
            "gpuShareByModel": {
                m: g / sum(gpus_by_model.values())
                for m, g in sorted(gpus_by_model.items(), key=lambda kv: -kv[1])
            },
        },
        "loads": {
            label: {"arrivalScale": factor, **calibration.get(label, {})}
            for label, factor in loads.items()
        },
        "cells": cells,
        "runs": [{"load": k[0], "seed": k[1], "regime": k[2], **m} for k, m in runs.items()],
    }


def cell(report: Mapping[str, Any], policy: str, load: str, regime: str) -> dict[str, Any] | None:
    for c in report["cells"]:
        if c["policy"] == policy and c["load"] == load and c["regime"] == regime:
            return dict(c)
    return None


def best_baseline_jct(report: Mapping[str, Any], load: str, regime: str) -> float:
    values = [
        c["meanBatchCompletionSeconds"]["mean"]
        for c in report["cells"]
        if c["load"] == load and c["regime"] == regime and c["policy"] in map(str, BASELINES)
    ]
    return min(values) if values else math.nan


def goals(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The goals of issues 12 and 13 for lepton-efficiency, each with its value and verdict."""
    out: list[dict[str, Any]] = []
    eff = str(PolicyName.LEPTON_EFFICIENCY)
    loads = list(report["loads"])
    mid = "60%" if "60%" in loads else (loads[len(loads) // 2] if loads else "")
    high = "85%" if "85%" in loads else (loads[-1] if loads else "")
    for regime in REGIMES:
        c = cell(report, eff, mid, regime)
        if c is None:
            continue
        ma = c["savings"].get(str(PolicyName.MOST_ALLOCATED))
        if ma:
            out.append(
                {
                    "goal": f"issue 12: less energy than most-allocated ({mid}, {regime})",
                    "value": ma["mean"],
                    "range": [ma["min"], ma["max"]],
                    "met": ma["min"] > 0,
                }
            )
        best = best_baseline_jct(report, mid, regime)
        change = c["meanBatchCompletionSeconds"]["mean"] / best - 1 if best else 0.0
        out.append(
            {
                "goal": f"mean batch completion <= +3 % of the best baseline ({mid}, {regime})",
                "value": change,
                "met": change <= GOAL_JCT_SLOWDOWN,
            }
        )
        out.append(
            {
                "goal": f"no service above its target ({mid}, {regime})",
                "value": int(c["servicesAboveTarget"]["max"]),
                "met": c["servicesAboveTarget"]["max"] == 0,
            }
        )
    c = cell(report, eff, mid, "scale_in")
    if c is not None:
        for base, bar in GOALS_SCALE_IN_60.items():
            s = c["savings"].get(base)
            if s:
                out.append(
                    {
                        "goal": f"issue 13: >= {bar:.0%} less than {base} ({mid}, scale_in)",
                        "value": s["mean"],
                        "range": [s["min"], s["max"]],
                        "met": s["min"] >= bar,
                    }
                )
    c = cell(report, eff, high, "always_on")
    if c is not None:
        for base, bar in GOAL_ALWAYS_ON_85.items():
            s = c["savings"].get(base)
            if s:
                out.append(
                    {
                        "goal": f"issue 13: >= {bar:.0%} less than {base} ({high}, always_on)",
                        "value": s["mean"],
                        "range": [s["min"], s["max"]],
                        "met": s["min"] >= bar,
                    }
                )
    return out


# Where a saving comes from, step by step from the default scheduler to Lepton: each
# step's policy against the previous one (same load, regime and seeds).
DECOMPOSITION = (
    ("consolidation (bin-packing)", PolicyName.DEFAULT_SCHEDULER, PolicyName.MOST_ALLOCATED),
    ("power caps", PolicyName.MOST_ALLOCATED, PolicyName.MOST_ALLOCATED_CAPPED),
    (
        "Lepton's placement beyond both (model choice, energy-aware packing)",
        PolicyName.MOST_ALLOCATED_CAPPED,
        PolicyName.LEPTON_EFFICIENCY,
    ),
)


def _cell_saving(
    report: Mapping[str, Any], policy: str, base: str, load: str, regime: str
) -> float:
    c = cell(report, policy, load, regime)
    saving = (c or {}).get("savings", {}).get(base)
    return float(saving["mean"]) if saving else math.nan


def decomposition(report: Mapping[str, Any], load: str, regime: str) -> list[dict[str, Any]]:
    """Each step's saving against the one before (mean over seeds), and the total."""
    present = {c["policy"] for c in report["cells"] if c["regime"] == regime and c["load"] == load}
    steps = []
    for label, base, policy in DECOMPOSITION:
        if str(base) in present and str(policy) in present:
            steps.append(
                {
                    "step": label,
                    "from": str(base),
                    "to": str(policy),
                    # the cell's own paired saving against that baseline (every step's
                    # "from" is a baseline, so run_study has worked it out per seed)
                    "saving": _cell_saving(report, str(policy), str(base), load, regime),
                }
            )
    return steps


def why(report: Mapping[str, Any], load: str) -> list[str]:
    """What bounds Lepton's placement at one load (scale in): the facts a reviewer checks."""
    eff = cell(report, str(PolicyName.LEPTON_EFFICIENCY), load, "scale_in")
    base = cell(report, str(PolicyName.MOST_ALLOCATED_CAPPED), load, "scale_in")
    if eff is None or base is None:
        return []
    share = report["trace"].get("gpuShareByModel", {})
    top = next(iter(share.items()), ("?", 0.0))
    e, b = eff, base
    idle_share = b["idleKWh"]["mean"] / b["energyKWh"]["mean"] if b["energyKWh"]["mean"] else 0.0
    return [
        f"idle draw of powered nodes is {idle_share:.0%} of most-allocated-capped's energy at "
        f"{load} load (scale in); its powered GPUs are held {b['gpuFillOfPowered']['mean']:.0%} "
        f"of the time (lepton-efficiency: {e['gpuFillOfPowered']['mean']:.0%}), so packing "
        "tighter has little idle left to win",
        f"{top[0]} is {top[1]:.0%} of the sampled fleet's GPUs, so most pods have no faster "
        "or more efficient model to go to",
        f"batch work (the only kind whose energy model choice changes much): "
        f"{b['batchDynamicKWh']['mean']:,.0f} kWh under most-allocated-capped, "
        f"{e['batchDynamicKWh']['mean']:,.0f} kWh under lepton-efficiency; services' active "
        f"draw {b['serviceDynamicKWh']['mean']:,.0f} vs {e['serviceDynamicKWh']['mean']:,.0f} "
        "kWh; idle "
        f"{b['idleKWh']['mean']:,.0f} vs {e['idleKWh']['mean']:,.0f} kWh",
        f"nodes added by the autoscaler: {b['nodesAdded']['mean']:,.0f} vs "
        f"{e['nodesAdded']['mean']:,.0f} (each costs the provisioning delay and the scale-in "
        "grace at idle)",
    ]


def _pm(stats: Mapping[str, float], fmt: str, scale: float = 1.0) -> str:
    low, high = stats["min"] * scale, stats["max"] * scale
    return f"{stats['mean'] * scale:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def _saving(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return "-"
    mark = "" if stats["counts"] else " (n.s.)"
    return f"{stats['mean']:+.1%} [{stats['min']:+.1%}, {stats['max']:+.1%}]{mark}"


def headline(report: Mapping[str, Any], title: str = "") -> str:
    """One line: lepton-efficiency against the strongest baseline at the middle load, scale in."""
    eff = str(PolicyName.LEPTON_EFFICIENCY)
    loads = list(report["loads"])
    mid = "60%" if "60%" in loads else (loads[len(loads) // 2] if loads else "")
    c = cell(report, eff, mid, "scale_in")
    if c is None or not c["savings"]:
        return ""
    strongest = min(c["savings"], key=lambda b: c["savings"][b]["mean"])
    s = c["savings"][strongest]
    return (
        f"{title}lepton-efficiency uses {s['mean']:+.1%} less energy [range {s['min']:+.1%} "
        f"to {s['max']:+.1%} over {len(report['assumptions']['seeds'])} seeds] than the "
        f"strongest baseline, {strongest}, at the {mid} load level with the autoscaler "
        f"(scale in){'' if s['counts'] else ' — not significant: the range includes zero'}."
    )


def markdown_table(report: Mapping[str, Any], title: str = "") -> str:
    """The policy x load x regime table and the goals (model estimates)."""
    a = report["assumptions"]
    lines = [f"### {title}", ""] if title else []
    loads = ", ".join(
        f"{label}: arrival scale {v['arrivalScale']:.5f}"
        + (f" (default-scheduler allocation reached {v['reached']:.1%})" if "reached" in v else "")
        for label, v in report["loads"].items()
    )
    lines += [
        f"Trace: {report['trace']['pods']} pods; fleet: {report['trace']['sampledNodes']} nodes "
        f"sampled per seed (stratified by GPU model) from {report['trace']['fleetNodes']}. "
        f"Model estimates, not measurements. Loads ({loads}). Seeds {a['seeds']}: mean "
        f"[min, max]; a saving marked (n.s.) has a range that includes zero. Assumptions: "
        f"GPU models {a['modelMap']}, kinds {a['kindMap']}, service demand "
        f"{a['serviceReferenceUtilizationPercent']:g} % of an A40 per GPU held (x its share), "
        f"service target {a['serviceTargetUtilization']:g}, autoscaler: least-waste expander, "
        f"provisioning {a['provisioningDelaySeconds']:.0f} s, scale-in grace "
        f"{a['scaleInGraceSeconds']:.0f} s; window from the arrival of "
        f"{a['warmupFraction']:.0%} of the pods to the last arrival: idle and service "
        "draw counted in the window, each batch pod arriving in it charged its energy to "
        "completion (`energyKWhClipped` in the JSON cuts that tail off).",
        "",
        "| load | regime | policy | energy (kWh) | vs default | vs default-capped "
        "| vs most-allocated | vs most-allocated-capped | mean batch JCT (h) | p95 batch JCT (h) "
        "| services above target | mean queueing (s) | node-hours | GPU allocation |",
        "|" + "---|" * 14,
    ]
    for c in report["cells"]:
        s = c["savings"]
        lines.append(
            f"| {c['load']} | {c['regime'].replace('_', '-')} | {c['policy']} "
            f"| {_pm(c['energyKWh'], ',.0f')} "
            f"| {_saving(s.get('default-scheduler'))} "
            f"| {_saving(s.get('default-scheduler-capped'))} "
            f"| {_saving(s.get('most-allocated'))} | {_saving(s.get('most-allocated-capped'))} "
            f"| {c['meanBatchCompletionSeconds']['mean'] / 3600:.2f} "
            f"| {c['p95BatchCompletionSeconds']['mean'] / 3600:.2f} "
            f"| {c['servicesAboveTarget']['mean']:.0f} "
            f"| {c['meanQueueingSeconds']['mean']:.0f} "
            f"| {c['nodeHoursPowered']['mean']:,.0f} "
            f"| {c['meanGpuAllocation']['mean']:.1%} |"
        )
    mid = "60%" if "60%" in report["loads"] else next(iter(report["loads"]), "")
    for regime in REGIMES:
        steps = decomposition(report, mid, regime)
        if steps:
            lines += ["", f"Where the saving comes from ({mid}, {regime.replace('_', '-')}):"]
            lines += [f"- {s['step']}: {s['to']} vs {s['from']} {s['saving']:+.1%}" for s in steps]
    reasons = why(report, mid)
    if reasons:
        lines += ["", f"What bounds Lepton's placement ({mid}, scale-in):"]
        lines += [f"- {r}" for r in reasons]
    checks = goals(report)
    if checks:
        lines += ["", "Goals for lepton-efficiency:"]
        for g in checks:
            value = g["value"]
            shown = f"{value:+.1%}" if isinstance(value, float) else str(value)
            if "range" in g:
                shown += f" [{g['range'][0]:+.1%}, {g['range'][1]:+.1%}]"
            lines.append(f"- {g['goal']}: {shown} — {'met' if g['met'] else 'NOT met'}")
    return "\n".join(lines) + "\n"


# The chart is optional: matplotlib is not a run-time dependency (the image leaves it out).
CHART_HINT = "no chart: matplotlib is not installed (pip install 'lepton[charts]')"


def write_chart(report: Mapping[str, Any], path: Path) -> Path | None:
    """Energy against load per policy, one panel per regime (mean and seed range), PNG;
    ``None`` when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = list(report["loads"])
    policies = list(dict.fromkeys(c["policy"] for c in report["cells"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, regime in zip(axes, REGIMES, strict=True):
        for policy in policies:
            cells = [cell(report, policy, load, regime) for load in loads]
            if any(c is None for c in cells):
                continue
            mean = [c["energyKWh"]["mean"] for c in cells if c]
            low = [c["energyKWh"]["min"] for c in cells if c]
            high = [c["energyKWh"]["max"] for c in cells if c]
            style = "-" if policy.startswith("lepton") else "--"
            ax.plot(loads, mean, style, marker="o", label=policy, linewidth=1.2)
            ax.fill_between(loads, low, high, alpha=0.12)
        ax.set_title(f"{regime.replace('_', '-')}: energy over the window (kWh, model estimate)")
        ax.set_xlabel("load level (default-scheduler mean GPU allocation)")
        ax.set_ylabel("kWh")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(report: Mapping[str, Any], out_dir: Path, name: str = "simulation") -> list[Path]:
    """``<name>.json``, ``<name>.md`` and (with matplotlib) ``<name>_energy_vs_load.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=1))
    md_path = out_dir / f"{name}.md"
    md_path.write_text(markdown_table(report))
    chart = write_chart(report, out_dir / f"{name}_energy_vs_load.png")
    return [json_path, md_path] + ([chart] if chart else [])
