"""The simulator with and without services' forecast demand (issue 19's simulator hook).

Each GPU service pod of the openb trace is given one measured utilisation series
of the GenAI serving trace (``--utilization``, a seeded draw), cut in time: the
policy sees the forecast p90 of its history (``lepton.core.predictor``, the
Lepton scheduler's code) or, without the hook, the declared
``service_reference_utilization_percent`` (30 % of an A40 per GPU); either way the
pod then runs at its measured load (:mod:`lepton.sim.service_load`). Reported per
policy: services whose measured p90 pushed their GPU above the service target,
their GPU-hours' share above it, and energy.

    python -m bench.bench_service_forecast [--pods 3000] [--nodes 60] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from lepton.core.predictor import utilization_csv
from lepton.sim.engine import SimConfig, simulate
from lepton.sim.policies import PolicyName
from lepton.sim.service_load import service_loads
from lepton.sim.trace import (
    DEFAULT_NODE_LIST,
    DEFAULT_POD_LIST,
    default_trace_dir,
    load_nodes,
    load_pods,
    sample_nodes,
    workload_kind,
)

from .bench_predictor import DEFAULT_UTILIZATION

POLICIES = (PolicyName.DEFAULT_SCHEDULER, PolicyName.LEPTON_BALANCED, PolicyName.LEPTON_EFFICIENCY)
SHOWN = (
    "servicePods",
    "servicesAboveTarget",
    "serviceGpuHoursAboveTargetShare",
    "energyKWh",
    "serviceDynamicKWh",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--utilization", type=Path, default=DEFAULT_UTILIZATION)
    parser.add_argument("--pods", type=int, default=3000, help="the trace's first N pods")
    parser.add_argument("--nodes", type=int, default=60, help="a seeded sample of the fleet")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with args.utilization.open() as handle:
        utilization = utilization_csv(handle)
    trace = default_trace_dir()
    pods = load_pods(trace / DEFAULT_POD_LIST, limit=args.pods)
    all_nodes = load_nodes(trace / DEFAULT_NODE_LIST)
    base = SimConfig(warmup_fraction=0.1)
    kinds = [workload_kind(p, base.kind_map) for p in pods]
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        loads = service_loads(pods, kinds, utilization, seed=seed)
        nodes = sample_nodes(all_nodes, args.nodes, seed=seed)
        for policy in POLICIES:
            for hook in (False, True):
                config = dataclasses.replace(base, seed=seed, forecast_services=hook)
                metrics = simulate(pods, nodes, policy, config, loads).metrics()
                row = {"seed": seed, "policy": str(policy), "forecast": hook}
                row |= {k: metrics[k] for k in SHOWN}
                rows.append(row)
                print(json.dumps(row), flush=True)
    lines = [
        "| policy | services' demand | services above target | GPU-hours above target "
        "| energy kWh | service dynamic kWh |",
        "|---|---|---|---|---|---|",
    ]
    for policy in POLICIES:
        for hook in (False, True):
            cell = [r for r in rows if r["policy"] == str(policy) and r["forecast"] == hook]
            n = len(cell)
            lines.append(
                f"| {policy} | {'forecast p90' if hook else 'declared 30 %'} "
                f"| {sum(r['servicesAboveTarget'] for r in cell) / n:.1f} "
                f"of {cell[0]['servicePods']} "
                f"| {sum(r['serviceGpuHoursAboveTargetShare'] for r in cell) / n:.1%} "
                f"| {sum(r['energyKWh'] for r in cell) / n:.1f} "
                f"| {sum(r['serviceDynamicKWh'] for r in cell) / n:.1f} |"
            )
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "simulator with and without services' forecast demand",
        "pods": args.pods,
        "nodes": args.nodes,
        "seeds": args.seeds,
        "seconds": time.perf_counter() - started,
        "runs": rows,
    }
    (args.out / "bench_service_forecast.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "service_forecast.md").write_text(table)
    print(table, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
