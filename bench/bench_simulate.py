"""Energy on the Alibaba GPU traces: every policy x load x regime x seed, one command.

For each trace (``openb_pod_list_default.csv``, ``openb_pod_list_gpushare20.csv``
and any ``--trace PATH`` in the openb format): a 150-node fleet sampled per seed
(stratified by GPU model) from the trace's 1,213 nodes; three load levels whose
arrival scales are found by a short search so that the default scheduler's mean
GPU allocation is about 30 %, 60 % and 85 %; five seeds; both regimes (scale in
with the cluster-autoscaler emulation, always on); the eight policies (default
and MostAllocated kube-scheduler, each uncapped and at the Auto power limit;
Lepton Balanced and Efficiency, each capped and uncapped). Writes per trace
``results/simulation_<trace>.json|.md`` and ``_energy_vs_load.png``, and
``results/simulation.md`` with the headline against the strongest baseline first.
Model estimates.

    python -m bench.bench_simulate [--out results] [--trace PATH ...] [--quick] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lepton.sim.report import headline
from lepton.sim.run import cli_run
from lepton.sim.trace import default_trace_dir

TRACES = ("openb_pod_list_default.csv", "openb_pod_list_gpushare20.csv")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--trace", type=Path, action="append", default=[], help="another pod list")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one trace, 2 seeds, 1,500 pods")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    traces = [default_trace_dir() / t for t in TRACES] + list(args.trace)
    if args.quick:
        traces = traces[:1]
    headlines, sections, summary = [], [], {}
    for path in traces:
        name = "simulation_" + path.stem.removeprefix("openb_pod_list_")
        started = time.monotonic()
        outcome = cli_run(
            pods_path=path,
            out_dir=args.out,
            name=name,
            seeds=tuple(range(2 if args.quick else args.seeds)),
            pod_limit=1500 if args.quick else None,
            workers=args.workers,
            progress=lambda line, trace=path.name: print(f"[{trace}] {line}", flush=True),
        )
        took = time.monotonic() - started
        headlines.append("- " + headline(outcome.report, f"**{path.name}**: "))
        sections.append(f"### {path.name}\n\n{outcome.table}\nWall time: {took:.0f} s.\n")
        summary[path.name] = {"wallSeconds": took, "loads": outcome.report["loads"]}
        (args.out / f"{name}.md").unlink()  # its table is in simulation.md
        print(f"## {path.name} ({took:.0f} s)\n{outcome.table}", flush=True)
    (args.out / "simulation.md").write_text(
        "## Energy on the Alibaba GPU traces (simulation, model estimates)\n\n"
        + "\n".join(headlines)
        + "\n\nCommand: `python -m bench.bench_simulate --out results` (part of `make bench`).\n\n"
        + "\n".join(sections)
    )
    (args.out / "simulation_summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
