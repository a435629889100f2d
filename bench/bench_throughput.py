"""Scheduling throughput with Lepton's extender ÷ without it, on 500 kwok nodes, in one run.

The goal (issue 4) is a ratio of at least 0.8: asking the extender must not make
kube-scheduler much slower. Both runs use the same local control plane and fleet
and the same number of GPU pods; only the scheduler differs:

* the default kube-scheduler (the cluster's own, default profile);
* the ``lepton-scheduler`` profile calling the extender (``lepton scheduler``) for
  filter and prioritize on every pod, each pod a LeptonJob pod with energy hints.

For each run the pods are created while that scheduler is stopped, then the
scheduler is started, and throughput is the number of pods over the time from
the first to the last pod seen bound (start-up excluded, the same way for both).

Each run also reads the scheduler's own ``/metrics``: its scheduling attempts
(``scheduler_scheduling_attempt_duration_seconds``, binding included) and its
scheduling algorithm (``scheduler_scheduling_algorithm_duration_seconds``:
filter and score, extenders included), count and mean; for the extender run,
the extender's per-stage means (``lepton_scheduler_phase_duration_seconds``)
and its share of the algorithm's time (the extender's filter + prioritize
seconds over kube-scheduler's algorithm seconds).

    python -m bench.bench_throughput [--pods 500] [--nodes 500] [--out results]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scrape import (
    ALGORITHM_METRIC,
    ATTEMPT_METRIC,
    EXTENSION_POINT_METRIC,
    fetch,
    histogram_totals,
    phase_breakdown,
)
from lepton.cluster import tools
from lepton.cluster.fleet import Fleet, NodeGroup
from lepton.cluster.local import LocalCluster
from lepton.cluster.stack import LeptonStack
from lepton.core.hints import EnergyPolicy, JobHints, hints_to_annotations
from lepton.core.names import LABEL_JOB_NAME, RESOURCE_GPU, SCHEDULER_NAME
from lepton.core.times import parse_time

GOAL_RATIO = 0.8


def fleet(nodes: int) -> Fleet:
    per = nodes // 4
    return Fleet(
        (
            NodeGroup("a40", per, "A40", 4, "zone-a"),
            NodeGroup("a100", per, "A100", 8, "zone-b"),
            NodeGroup("t4", per, "T4", 4, "zone-c"),
            NodeGroup("l4", nodes - 3 * per, "L4", 4, "zone-a"),
        )
    )


def pod(name: str, namespace: str, scheduler: str, lepton: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if lepton:
        hints = JobHints(name, EnergyPolicy.EFFICIENCY, 1.0, power_cap="None")
        metadata["labels"] = {LABEL_JOB_NAME: name}
        metadata["annotations"] = hints_to_annotations(hints)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "schedulerName": scheduler,
            "containers": [
                {"name": "c", "image": "x", "resources": {"limits": {RESOURCE_GPU: "1"}}}
            ],
        },
    }


def _bound(cluster: LocalCluster, namespace: str) -> int:
    out = cluster.kubectl(
        "get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].spec.nodeName}", timeout=60
    )
    return len(out.stdout.split())


def measure(cluster: LocalCluster, namespace: str, count: int, start: Any) -> dict[str, Any]:
    """Start the scheduler, wait for ``count`` binds, and time them from the schedulers' own
    ``Scheduled`` events (events.k8s.io ``eventTime`` has microseconds)."""
    start()
    deadline = time.monotonic() + 600
    while _bound(cluster, namespace) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    events = json.loads(
        cluster.kubectl(
            "get", "events.events.k8s.io", "-n", namespace, "-o", "json", timeout=120
        ).stdout
    )["items"]
    times = sorted(
        t
        for e in events
        if (t := parse_time(e.get("eventTime"))) and e.get("reason") == "Scheduled"
    )
    bound = _bound(cluster, namespace)
    if len(times) < 2:
        return {"pods": count, "bound": bound, "pods_per_second": None}
    seconds = (times[-1] - times[0]).total_seconds()
    return {
        "pods": count,
        "bound": bound,
        "scheduled_events": len(times),
        "seconds": round(seconds, 3),
        "pods_per_second": round((len(times) - 1) / max(seconds, 1e-6), 2),
    }


def scheduler_metrics(cluster: LocalCluster, process: str) -> dict[str, Any]:
    """kube-scheduler's own count and mean of scheduling attempts (by result: these include
    binding, which queues in a burst) and of the scheduling algorithm (filter and score,
    extenders included: what the extender adds to)."""
    port = cluster.state.processes[process].port
    try:
        text = fetch(f"https://127.0.0.1:{port}/metrics")
    except OSError as error:  # the pods/s figures stand without it
        return {"error": f"could not read kube-scheduler's /metrics: {error}"}

    def summary(totals: dict[str, float]) -> dict[str, Any]:
        count = totals["count"]
        return {
            "count": int(count),
            "sum_seconds": round(totals["sum_seconds"], 4),
            "mean_ms": round(1000 * totals["sum_seconds"] / count, 3) if count else None,
        }

    attempts = histogram_totals(text, ATTEMPT_METRIC, by="result")
    algorithm = histogram_totals(text, ALGORITHM_METRIC, by="")
    # kube-scheduler's own plugins per extension point (Filter, Score, ...): extenders excluded
    points = histogram_totals(text, EXTENSION_POINT_METRIC, by="extension_point")
    return {
        ATTEMPT_METRIC: {result: summary(t) for result, t in attempts.items()},
        ALGORITHM_METRIC: summary(algorithm.get("", {"count": 0, "sum_seconds": 0.0})),
        EXTENSION_POINT_METRIC: {point: summary(t) for point, t in sorted(points.items())},
    }


def extender_share(scheduler: dict[str, Any], phases: dict[str, Any]) -> float | None:
    """The extender's filter + prioritize seconds over kube-scheduler's algorithm seconds."""
    algorithm_seconds = scheduler.get(ALGORITHM_METRIC, {}).get("sum_seconds", 0.0)
    ours = sum(
        phases.get(verb, {}).get("calls", 0) * phases.get(verb, {}).get("request_mean_ms", 0.0)
        for verb in ("filter", "prioritize")
    )
    return round(ours / 1000 / algorithm_seconds, 3) if algorithm_seconds else None


def run(pods: int, nodes: int) -> dict[str, Any]:
    tools.build_all(("etcd", "kwok", "kubernetes"))
    with tempfile.TemporaryDirectory(prefix="lepton-throughput-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", progress=print)
        cluster.up(fleet(nodes))
        try:
            stack = LeptonStack(cluster)
            stack.start_extender()
            cluster.stop_lepton_scheduler()
            results: dict[str, Any] = {}
            # The default scheduler: stopped while its pods are created, then started.
            cluster.kubectl("create", "namespace", "plain")
            cluster.stop_processes(["kube-scheduler"])
            cluster.submit_concurrently(
                ["create"],
                [pod(f"p-{i}", "plain", "default-scheduler", False) for i in range(pods)],
            )
            results["default_scheduler"] = measure(
                cluster,
                "plain",
                pods,
                cluster.start_default_scheduler,
            )
            results["default_scheduler"]["kube_scheduler"] = scheduler_metrics(
                cluster, "kube-scheduler"
            )
            # lepton-scheduler with the extender, on the same fleet (which now holds the
            # first run's pods: both runs see a cluster with free GPUs on every node).
            cluster.kubectl("create", "namespace", "lepton")
            cluster.submit_concurrently(
                ["create"], [pod(f"l-{i}", "lepton", SCHEDULER_NAME, True) for i in range(pods)]
            )
            results["lepton_scheduler_with_extender"] = measure(
                cluster,
                "lepton",
                pods,
                lambda: cluster.start_lepton_scheduler(stack.extender_url),
            )
            ours = results["lepton_scheduler_with_extender"]
            ours["kube_scheduler"] = scheduler_metrics(cluster, SCHEDULER_NAME)
            ours["extender_phases"] = phase_breakdown(fetch(f"{stack.extender_url}/metrics"))
            ours["extender_share_of_algorithm"] = extender_share(
                ours["kube_scheduler"], ours["extender_phases"]
            )
        finally:
            cluster.down()
    base = results["default_scheduler"]["pods_per_second"]
    ours = results["lepton_scheduler_with_extender"]["pods_per_second"]
    ratio = round(ours / base, 3) if base and ours else None
    return {
        "benchmark": "scheduling throughput with the extender / without, same run",
        "nodes": nodes,
        "pods_per_run": pods,
        **results,
        "ratio": ratio,
        "goal_ratio": GOAL_RATIO,
        "met_goal": ratio is not None and ratio >= GOAL_RATIO,
        "load_average_1m": os.getloadavg()[0],
    }


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["default scheduler", f"{SCHEDULER_NAME} + extender"]
    values = [
        result["default_scheduler"]["pods_per_second"] or 0,
        result["lepton_scheduler_with_extender"]["pods_per_second"] or 0,
    ]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(labels, values, color=["#999999", "#1f5fa8"])
    ax.set_xlabel("pods bound per second")
    ax.set_title(f"{result['nodes']} kwok nodes: ratio {result['ratio']} (goal ≥ {GOAL_RATIO})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_throughput", description=__doc__)
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.pods, args.nodes)
    (args.out / "bench_throughput.json").write_text(json.dumps(result, indent=2))
    chart(result, args.out / "bench_throughput.png")
    print(json.dumps({k: v for k, v in result.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
