"""The real replay: does the simulator's prediction hold on a real control plane?

Replays a slice of the Alibaba GPU trace (600 pods from the 51st on: the first
50 are stragglers spread over 2,775 hours), time-compressed, through the real
kube-scheduler — its default profile, a bin-packing profile (``most-allocated``:
NodeResourcesFit MostAllocated over cpu, memory and ``nvidia.com/gpu``,
percentageOfNodesToScore 100), then the ``lepton-scheduler`` profile with
Lepton's scheduler under the Balanced and Efficiency policies — over a 150-node
kwok fleet sampled from the trace's (every 8th node, as the simulator's 150-node
scenario). Both sides run the scale-in regime: on the real cluster the
simulator's cluster-autoscaler emulation cordons and uncordons the kwok nodes
(:class:`lepton.sim.replay.ReplayAutoscaler`). The observed placements and
powered spells are priced by the simulator's own energy accounting, and the
simulator runs the same slice on the same fleet with the same settings. Writes
``results/replay.json``, ``results/replay.png`` and ``results/replay.md``
(about 8 minutes on the 2-core development machine). Model estimates from real
placements, not measurements.

    python -m bench.bench_replay [--out results] [--pods 600] [--nodes 150]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lepton.sim.engine import DEFAULT_MODEL_MAP
from lepton.sim.policies import PolicyName
from lepton.sim.replay import (
    BAR_ENERGY_AGREEMENT,
    MAX_PEAK_ARRIVALS_PER_SECOND,
    REPLAY_POLICIES,
    ObservedRun,
    ReplayConfig,
    compare,
    compression_for,
    peak_arrivals_per_second,
    trace_slice,
    whole_gpu_pods,
)
from lepton.sim.trace import (
    DEFAULT_NODE_LIST,
    DEFAULT_POD_LIST,
    default_trace_dir,
    load_nodes,
    load_pods,
    sample_nodes,
)


def _progress(message: str) -> None:
    print(message, flush=True)


def markdown(report: dict[str, Any], command: str) -> str:
    """The README table: per policy, real and simulated energy, difference, ranking."""
    s, sl, verdict = report["settings"], report["slice"], report["verdict"]
    lines = [
        "## The real replay against the simulator (model estimates from real placements)",
        "",
        f"Slice: {sl['pods']} trace pods ({sl['gpuPods']} with GPUs) on {sl['nodes']} kwok "
        f"nodes ({sl['gpus']} GPUs); time compression {s['timeCompression']:.0f}x, window "
        f"{s['windowEndSeconds']:.0f} s of replay. Both runs in the scale-in regime with "
        f"the simulator's cluster-autoscaler emulation (on the real cluster: powered-off "
        f"nodes cordoned, one uncordoned {s['provisioningDelaySeconds']:.3f} s after a "
        f"pending pod fits no powered node, an empty node cordoned after "
        f"{s['scaleInGraceSeconds']:.3f} s; 300 s and 600 s compressed); GPU models "
        f"{s['modelMap']}, {s['fractionalGpuRule']}; no load forecast on either side; "
        f"simulator seeds {s['seeds']}. Energies in Wh of the compressed replay (x "
        f"{s['timeCompression']:.0f} for trace time). Command: `{command}`.",
        "",
        "| policy | real (Wh) | simulated (Wh) [seed range] | difference | idle difference "
        "| dynamic difference | nodes added real / sim | node-hours real / sim "
        "| mean wait real / sim (ms) | p95 binding lag (ms) "
        "| simulated with the replay's latency (Wh) [seed range] |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for policy, row in report["policies"].items():
        real, sim = row["real"], row["simulated"]
        low, high = sim["scaleInWattHoursRange"]
        lat_low, lat_high = sim["withReplayLatencyWattHoursRange"]
        lag = real["bindingLagSeconds"]
        lines.append(
            f"| {policy} | {real['scaleInWattHours']:.2f} | {sim['scaleInWattHours']:.2f} "
            f"[{low:.2f} to {high:.2f}] | {row['scaleInDifference']:+.1%} "
            f"| {row['idleDifference']:+.1%} | {row['dynamicDifference']:+.1%} "
            f"| {real['nodesAdded']} / {sim['nodesAdded']:.1f} "
            f"| {real['nodeHoursPoweredScaleIn']:.3f} / {sim['nodeHoursPoweredScaleIn']:.3f} "
            f"| {real['meanWaitSeconds'] * 1000:.0f} / {sim['meanWaitSeconds'] * 1000:.0f} "
            f"| {lag['p95'] * 1000:.0f} "
            f"| {sim['withReplayLatencyWattHours']:.2f} [{lat_low:.2f} to {lat_high:.2f}] |"
        )
    lines.append("")
    v = verdict["scaleIn"]
    lines.append(
        f"- ranking real {' < '.join(v['realRanking'])}, simulated "
        f"{' < '.join(v['simulatedRanking'])} — "
        f"{'same' if v['sameRanking'] else 'DIFFERENT'} ranking (pairs the simulator "
        f"separates by more than {s['rankingTieTolerance']:.0%}); largest difference "
        f"{v['largestDifference']:.1%} — "
        f"{'within' if v['withinBar'] else 'NOT within'} the {BAR_ENERGY_AGREEMENT:.0%} bar"
    )
    lines.append(
        "- the last column runs the same simulator with each pod arriving as late as a pod "
        "of that real run was bound (lags drawn from the run's own): how far the control "
        "plane's scheduling latency alone moves the simulated energy; the bar is judged on "
        "the simulator without it"
    )
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(report["policies"])
    real = [report["policies"][p]["real"]["scaleInWattHours"] for p in policies]
    sim = [report["policies"][p]["simulated"]["scaleInWattHours"] for p in policies]
    ranges = [report["policies"][p]["simulated"]["scaleInWattHoursRange"] for p in policies]
    errors = [[s - r[0] for s, r in zip(sim, ranges, strict=True)]]
    errors.append([r[1] - s for s, r in zip(sim, ranges, strict=True)])
    x = range(len(policies))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([i - 0.2 for i in x], real, 0.4, label="real replay (kube-scheduler + kwok)")
    ax.bar([i + 0.2 for i in x], sim, 0.4, yerr=errors, capsize=4, label="simulator (seed range)")
    ax.set_xticks(list(x), policies)
    ax.set_ylabel("energy, scale-in regime (Wh of the replay)")
    ax.set_title("Real replay vs simulator, same slice (model estimates)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--first", type=int, default=50, help="index of the slice's first pod")
    parser.add_argument("--pods", type=int, default=600)
    parser.add_argument("--nodes", type=int, default=150)
    parser.add_argument("--arrival-seconds", type=float, default=90.0)
    parser.add_argument("--tail-seconds", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=5, help="simulator seeds (tie-breaking)")
    parser.add_argument("--name", default="replay", help="output files' stem")
    parser.add_argument(
        "--gpu-pods-only",
        action="store_true",
        help="drop the slice's pods without GPUs (in both runs): the Lepton scheduler's "
        "managedResources stanza leaves them to kube-scheduler alone",
    )
    parser.add_argument(
        "--policies",
        default=",".join(REPLAY_POLICIES),
        help="comma-separated, from " + ", ".join(REPLAY_POLICIES),
    )
    parser.add_argument(
        "--save-observed",
        type=Path,
        help="also write what the real replay observed (every pod's node and start, "
        "every node's powered spells) to this JSON file",
    )
    parser.add_argument(
        "--from-observed",
        type=Path,
        help="price a saved replay (--save-observed, same slice flags) without a cluster",
    )
    args = parser.parse_args(argv)
    from lepton.cluster import tools
    from lepton.cluster.replay import replay_on_local_cluster

    trace_dir = default_trace_dir()
    pods = whole_gpu_pods(
        trace_slice(load_pods(trace_dir / DEFAULT_POD_LIST), args.first, args.pods)
    )
    if args.gpu_pods_only:
        pods = [p for p in pods if p.num_gpu > 0]
    nodes = sample_nodes(load_nodes(trace_dir / DEFAULT_NODE_LIST), args.nodes)
    compression = compression_for(pods, args.arrival_seconds)
    peak = peak_arrivals_per_second(pods, compression)
    if peak > MAX_PEAK_ARRIVALS_PER_SECOND:
        print(
            f"[replay] warning: {peak} pods arrive within one second at this compression "
            f"(more than {MAX_PEAK_ARRIVALS_PER_SECOND}); raise --arrival-seconds",
            file=sys.stderr,
        )
    settings = ReplayConfig(
        time_compression=compression,
        window_end_seconds=args.arrival_seconds + args.tail_seconds,
        model_map=dict(DEFAULT_MODEL_MAP),
    )
    policies = [PolicyName(p) for p in args.policies.split(",") if p]
    started = time.monotonic()
    if args.from_observed:
        runs = json.loads(args.from_observed.read_text())
        observed = {PolicyName(p): ObservedRun.from_json(r) for p, r in runs.items()}
    else:
        tools.build_all(("etcd", "kwok", "kubernetes"), progress=_progress)
        with tempfile.TemporaryDirectory(prefix="lepton-replay-") as state:
            observed = replay_on_local_cluster(
                pods, nodes, settings, policies, Path(state) / "cluster", _progress
            )
    args.out.mkdir(parents=True, exist_ok=True)
    if args.save_observed:
        args.save_observed.write_text(
            json.dumps({str(p): r.to_json() for p, r in observed.items()})
        )
    report = compare(pods, nodes, settings, observed, seeds=tuple(range(args.seeds)))
    report["slice"] |= {"firstPodIndex": args.first, "peakArrivalsPerSecond": peak}
    report["replayWallSeconds"] = time.monotonic() - started
    command = "python -m bench.bench_replay " + " ".join(argv or sys.argv[1:])
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    table = markdown(report, command.strip())
    (args.out / f"{args.name}.md").write_text(table)
    chart(report, args.out / f"{args.name}.png")
    print(table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
