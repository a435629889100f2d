"""Load predictor accuracy: MAE of the model against the last-value baseline on held-out history.

Two histories:

* **trace** — per-node GPU allocation over time, derived from the Alibaba PAI
  2023 trace (``lepton/data/traces/``): pods are placed in the order they
  start on the trace's nodes (honouring ``gpu_spec`` and capacity) on the
  least allocated node that fits, as kube-scheduler's default scoring does,
  and a node's utilisation is the fraction of its GPUs allocated (a shared
  GPU counts its ``gpu_milli``). Nine in ten pods start in the trace's last
  month, so the series cover the time from the 5th percentile of pod starts
  on, every 5 minutes, for a seeded sample of the nodes that were ever used.
  The trace gives seconds from its start; the time of day assumes it started
  at midnight.
* **diurnal** — synthetic: nodes busy by day and quiet by night with noise,
  to show what the time-of-day features buy where such a cycle exists.

Each history is cut at 70 % of its time span; the model trains on the past
and both forecasts are scored on the rest (mean utilisation over the horizon).

    python -m bench.bench_predictor [--out results]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lepton.core.predictor import PredictorConfig, Series, evaluate
from lepton.data import data_dir

TRACE_CONFIG = PredictorConfig(step_seconds=300.0, lags=12, horizon_steps=12)
TRACE_NODES_SAMPLED = 200
DIURNAL_CONFIG = PredictorConfig(step_seconds=300.0, lags=12, horizon_steps=12)


def trace_dir() -> Path:
    return data_dir() / "traces"


def trace_history(
    directory: Path, step_seconds: float, sample: int = TRACE_NODES_SAMPLED, seed: int = 0
) -> tuple[dict[str, Series], dict[str, Any]]:
    """Per-node allocated-GPU fraction, sampled every ``step_seconds``."""
    with (directory / "openb_node_list_gpu_node.csv").open() as handle:
        nodes = [
            (row["sn"], int(row["gpu"]), row["model"])
            for row in csv.DictReader(handle)
            if int(row["gpu"] or 0) > 0
        ]
    pods = []
    with (directory / "openb_pod_list_default.csv").open() as handle:
        for row in csv.DictReader(handle):
            num_gpu, milli = int(row["num_gpu"] or 0), int(row["gpu_milli"] or 0)
            demand = float(num_gpu) if num_gpu >= 1 and milli >= 1000 else milli / 1000.0
            if demand <= 0:
                continue
            start = float(row["scheduled_time"] or row["creation_time"] or 0)
            end = float(row["deletion_time"]) if row["deletion_time"] else math.inf
            if end <= start:
                continue
            models = set(row["gpu_spec"].split("|")) if row["gpu_spec"] else None
            pods.append((start, end, demand, num_gpu, models))
    pods.sort(key=lambda p: p[0])
    horizon_end = max(p[1] for p in pods if math.isfinite(p[1]))
    capacity = np.array([float(g) for _, g, _ in nodes])
    free = capacity.copy()
    steps: dict[int, list[tuple[float, float]]] = defaultdict(list)  # node -> (time, delta)
    running: list[tuple[float, int, float]] = []  # (end, node, demand)
    placed = skipped = 0
    for start, end, demand, whole, models in pods:
        still = []
        for item in running:
            if item[0] <= start:
                free[item[1]] += item[2]
            else:
                still.append(item)
        running = still
        fits = free >= demand - 1e-9
        if whole >= 1:
            fits &= free >= whole
        if models is not None:
            fits &= np.array([m in models for _, _, m in nodes])
        candidates = np.flatnonzero(fits)
        if not len(candidates):
            skipped += 1
            continue
        # spread: the least allocated node that fits (kube-scheduler's default scoring)
        share = free[candidates] / capacity[candidates]
        node = int(candidates[np.argmax(share)])
        free[node] -= demand
        end = min(end, horizon_end)
        running.append((end, node, demand))
        steps[node] += [(start, demand), (end, -demand)]
        placed += 1
    first = float(np.percentile([p[0] for p in pods], 5))
    grid = np.arange(first - first % step_seconds, horizon_end, step_seconds)
    used = sorted(steps)
    chosen = np.random.default_rng(seed).choice(used, min(sample, len(used)), replace=False)
    history = {}
    for node in sorted(int(n) for n in chosen):
        changes = steps[node]
        changes.sort()
        times = np.array([t for t, _ in changes])
        level = np.cumsum([d for _, d in changes]) / nodes[node][1]
        idx = np.searchsorted(times, grid, side="right") - 1
        values = np.where(idx >= 0, level[np.maximum(idx, 0)], 0.0)
        history[nodes[node][0]] = Series(grid.copy(), np.clip(values, 0.0, 1.0))
    info = {
        "trace_nodes": len(nodes),
        "nodes_used": len(used),
        "nodes_sampled": len(history),
        "series_start_day": first / 86_400,
        "gpu_pods_placed": placed,
        "gpu_pods_not_placed": skipped,
        "span_days": (horizon_end - first) / 86_400,
        "utilization": "allocated GPU fraction (a proxy: the trace has no measured utilisation)",
        "time_of_day": "assumes the trace starts at 00:00",
    }
    return history, info


def diurnal_history(nodes: int = 40, days: int = 14, seed: int = 0) -> dict[str, Series]:
    """Synthetic: a daily cycle with a per-node phase and amplitude, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, days * 86_400, DIURNAL_CONFIG.step_seconds)
    out = {}
    for n in range(nodes):
        phase, amplitude = rng.uniform(0, 24), rng.uniform(0.1, 0.45)
        hours = t / 3600
        values = 0.5 + amplitude * np.sin(2 * math.pi * (hours - phase) / 24)
        values += rng.normal(0, 0.05, len(t))
        out[f"synthetic-{n}"] = Series(t.astype(np.float64), np.clip(values, 0, 1))
    return out


def run(name: str, history: dict[str, Series], config: PredictorConfig) -> dict[str, Any]:
    started = time.perf_counter()
    result = evaluate(history, config, train_fraction=0.7)
    return {
        "history": name,
        "nodes": len(history),
        "step_seconds": config.step_seconds,
        "lags": config.lags,
        "horizon_steps": config.horizon_steps,
        "train_rows": result.train_rows,
        "test_rows": result.test_rows,
        "model_mae": result.model_mae,
        "last_value_mae": result.last_value_mae,
        "improvement": result.improvement,
        "model_beats_baseline": result.model_mae < result.last_value_mae,
        "seconds": time.perf_counter() - started,
    }


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(results))
    ax.bar(
        x - 0.2, [r["last_value_mae"] for r in results], 0.4, label="last value", color="#bbbbbb"
    )
    ax.bar(x + 0.2, [r["model_mae"] for r in results], 0.4, label="model", color="#4477aa")
    ax.set_xticks(x, [f"{r['history']} ({r['improvement']:+.0%})" for r in results])
    ax.set_ylabel("MAE of mean utilisation over the horizon")
    ax.set_title("load predictor vs last value, held-out last 30 % of each history")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="load predictor accuracy benchmark")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    history, info = trace_history(trace_dir(), TRACE_CONFIG.step_seconds)
    results = [
        {**run("trace", history, TRACE_CONFIG), **info},
        {**run("diurnal (synthetic)", diurnal_history(), DIURNAL_CONFIG), "synthetic": True},
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "load predictor MAE vs last value", "results": results}
    (args.out / "bench_predictor.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(results, args.out / "bench_predictor.png")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
