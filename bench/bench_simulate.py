"""Energy saved on the Alibaba GPU trace: every policy, both regimes, one command.

Replays ``openb_pod_list_default.csv`` (8,152 pods) on the trace's 1,213-node
fleet under the default-scheduler emulation, MostAllocated bin-packing and
Lepton's Balanced and Efficiency policies (the extender's own scoring code),
then the same under two sensitivity scenarios: older GPUs behind the trace's
undisclosed G2/G3, and a 150-node fleet. Writes ``results/simulation*.json``,
PNG charts and ``results/simulation.md`` (the README table). Model estimates.

    python -m bench.bench_simulate [--out results] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lepton.sim.run import cli_run, parse_model_map

SCENARIOS = (
    ("simulation", "Full trace, full fleet (default assumptions)", {}),
    (
        "simulation_older_gpus",
        "Sensitivity: G2 = V100, G3 = A100",
        {"model_map": parse_model_map(["G2=V100", "G3=A100"])},
    ),
    ("simulation_150_nodes", "Sensitivity: a 150-node fleet (every 8th node)", {"node_count": 150}),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="first 1,000 pods, main scenario")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sections = []
    summary = {}
    for name, title, options in SCENARIOS[:1] if args.quick else SCENARIOS:
        outcome = cli_run(
            out_dir=args.out,
            name=name,
            seed=args.seed,
            pod_limit=1000 if args.quick else None,
            **options,  # type: ignore[arg-type]
        )
        sections.append(f"### {title}\n\n{outcome.table}")
        summary[name] = {
            policy: {
                "wallSeconds": m["wallSeconds"],
                **m.get("vsDefaultScheduler", {}),
            }
            for policy, m in outcome.report["policies"].items()
        }
        print(f"## {title}\n{outcome.table}", flush=True)
    (args.out / "simulation.md").write_text(
        "## Energy on the Alibaba GPU trace (simulation, model estimates)\n\n" + "\n".join(sections)
    )
    (args.out / "simulation_summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
