"""Scheduling throughput with Lepton's scheduler ÷ without it, on 500 kwok nodes, in one run.

The goal (issue 4) is a ratio of at least 0.8: asking the Lepton scheduler must not make
kube-scheduler much slower. Both runs use the same local control plane and fleet
and the same number of GPU pods; only the scheduler differs:

* the default kube-scheduler (the cluster's own, default profile);
* the ``lepton-scheduler`` profile without its extender stanza: what the profile
  alone (every node scored, MostAllocated) costs kube-scheduler;
* the ``lepton-scheduler`` profile calling the Lepton scheduler (``lepton scheduler``) for
  filter and prioritize on every pod, each pod a LeptonJob pod with energy hints.

For each run the pods are created while that scheduler is stopped, then the
scheduler is started, and throughput is the number of pods over the time from
the first to the last pod seen bound (start-up excluded, the same way for both).

Each run also reads the scheduler's own ``/metrics``: its scheduling attempts
(``scheduler_scheduling_attempt_duration_seconds``, binding included) and its
scheduling algorithm (``scheduler_scheduling_algorithm_duration_seconds``:
filter and score, extenders included), count and mean; for the Lepton scheduler run,
the Lepton scheduler's per-stage means (``lepton_scheduler_phase_duration_seconds``)
and its share of the algorithm's time (the Lepton scheduler's filter + prioritize
seconds over kube-scheduler's algorithm seconds), and the algorithm's mean time per pod
split into the profile's own, the Lepton scheduler's handlers, and the rest of the callout. The
CPU milliseconds per pod of each component are read from ``/proc``: on a machine shared
with other work they say what each part costs better than wall time does.

    python -m bench.bench_throughput [--pods 500] [--nodes 500] [--out results]
        [--percentage-of-nodes-to-score N] [--single-verb]
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

from lepton_scheduler.config import kube_scheduler_config

from bench.scrape import (
    ALGORITHM_METRIC,
    ATTEMPT_METRIC,
    EXTENSION_POINT_METRIC,
    fetch,
    histogram_totals,
    phase_breakdown,
)
from bench.submit import submit_concurrently
from lepton.cluster import tools
from lepton.cluster.fleet import Fleet, NodeGroup
from lepton.cluster.local import LocalCluster
from lepton.cluster.processes import cpu_seconds
from lepton.cluster.stack import SCHEDULER_SERVER, LeptonStack
from lepton.core.hints import EnergyPolicy, JobHints, hints_to_annotations
from lepton.core.names import LABEL_JOB_NAME, RESOURCE_GPU, SCHEDULER_NAME
from lepton.core.times import parse_time

GOAL_RATIO = 0.8
PROFILE_RUN = "lepton-profile-alone"
EXTENDER_VERBS = ("filter", "prioritize", "filter-best")


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


CPU_PROCESSES = ("kube-apiserver", "etcd", "kwok", SCHEDULER_SERVER)


def _cpu(cluster: LocalCluster, names: list[str]) -> dict[str, float]:
    out = {}
    for name in names:
        process = cluster.state.processes.get(name)
        used = cpu_seconds(process.pid) if process is not None else None
        if used is not None:
            out[name] = used
    return out


def measure(
    cluster: LocalCluster, namespace: str, count: int, start: Any, scheduler: str
) -> dict[str, Any]:
    """Start the scheduler, wait for ``count`` binds, and time them from the schedulers' own
    ``Scheduled`` events (events.k8s.io ``eventTime`` has microseconds). Also the CPU each
    component used per pod meanwhile (start-up included for the scheduler: an upper bound),
    the one figure a machine shared with other work does not inflate much."""
    before = _cpu(cluster, list(CPU_PROCESSES))
    start()
    before[scheduler] = 0.0  # started just now: all its CPU is this run's
    deadline = time.monotonic() + 600
    while _bound(cluster, namespace) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    after = _cpu(cluster, [*CPU_PROCESSES, scheduler])
    cpu_ms_per_pod = {
        name: round(1000 * (after[name] - before[name]) / count, 3)
        for name in after
        if name in before
    }
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
        return {"pods": count, "bound": bound, "pods_per_second": None, "cpu_ms_per_pod": {}}
    seconds = (times[-1] - times[0]).total_seconds()
    return {
        "pods": count,
        "bound": bound,
        "scheduled_events": len(times),
        "seconds": round(seconds, 3),
        "pods_per_second": round((len(times) - 1) / max(seconds, 1e-6), 2),
        "cpu_ms_per_pod": cpu_ms_per_pod,
    }


def scheduler_metrics(cluster: LocalCluster, process: str) -> dict[str, Any]:
    """kube-scheduler's own count and mean of scheduling attempts (by result: these include
    binding, which queues in a burst) and of the scheduling algorithm (filter and score,
    extenders included: what the Lepton scheduler adds to)."""
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


def scheduler_share(scheduler: dict[str, Any], phases: dict[str, Any]) -> float | None:
    """The Lepton scheduler's filter + prioritize seconds over kube-scheduler's algorithm
    seconds."""
    algorithm_seconds = scheduler.get(ALGORITHM_METRIC, {}).get("sum_seconds", 0.0)
    ours = sum(
        phases.get(verb, {}).get("calls", 0) * phases.get(verb, {}).get("request_mean_ms", 0.0)
        for verb in EXTENDER_VERBS
    )
    return round(ours / 1000 / algorithm_seconds, 3) if algorithm_seconds else None


def cycle_breakdown(
    profile: dict[str, Any], ours: dict[str, Any], phases: dict[str, Any]
) -> dict[str, Any]:
    """kube-scheduler's mean algorithm time per pod with the Lepton scheduler, split: what the
    profile costs without it, the Lepton scheduler's handlers (decode to encode, per verb), and the
    rest of the callout (HTTP both ways, Go's JSON, aiohttp, waiting for a CPU and for the GIL)."""
    with_ext = ours.get(ALGORITHM_METRIC, {}).get("mean_ms")
    without = profile.get(ALGORITHM_METRIC, {}).get("mean_ms")
    if with_ext is None or without is None:
        return {}
    per_pod = ours[ALGORITHM_METRIC]["count"] or 1
    handlers = {
        verb: round(
            phases.get(verb, {}).get("calls", 0)
            * phases.get(verb, {}).get("request_mean_ms", 0.0)
            / per_pod,
            3,
        )
        for verb in EXTENDER_VERBS
    }
    return {
        "algorithm_with_scheduler": with_ext,
        "algorithm_profile_without_scheduler": without,
        "scheduler_handlers": handlers,
        "callout_outside_handlers": round(with_ext - without - sum(handlers.values()), 3),
    }


def lepton_profile(
    scheduler_url: str, cluster: LocalCluster, percentage: int | None, single_verb: bool = False
) -> dict[str, Any]:
    """The shipped lepton-scheduler configuration, less what ``start_scheduler_with`` fills in;
    ``percentage`` overrides its ``percentageOfNodesToScore`` (100: the Lepton scheduler sees
    every feasible node), 0 meaning kube-scheduler's adaptive default. ``single_verb``: the Lepton
    scheduler is asked once a pod (``filterVerb: filter-best``, no ``prioritizeVerb``)."""
    config: dict[str, Any] = kube_scheduler_config(scheduler_url, str(cluster.kubeconfig))
    for key in ("apiVersion", "kind", "clientConnection", "leaderElection"):
        config.pop(key)
    if percentage is not None:
        config["percentageOfNodesToScore"] = percentage
    if single_verb:
        for entry in config["extenders"]:
            entry["filterVerb"] = "filter-best"
            entry.pop("prioritizeVerb", None)
    return config


def run(
    pods: int, nodes: int, percentage: int | None = None, single_verb: bool = False
) -> dict[str, Any]:
    tools.build_all(("etcd", "kwok", "kubernetes"))
    with tempfile.TemporaryDirectory(prefix="lepton-throughput-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", progress=print)
        cluster.up(fleet(nodes))
        try:
            stack = LeptonStack(cluster)
            stack.start_scheduler()
            cluster.stop_lepton_scheduler()
            results: dict[str, Any] = {}
            # The default scheduler: stopped while its pods are created, then started.
            cluster.kubectl("create", "namespace", "plain")
            cluster.stop_processes(["kube-scheduler"])
            submit_concurrently(
                cluster,
                ["create"],
                [pod(f"p-{i}", "plain", "default-scheduler", False) for i in range(pods)],
            )
            results["default_scheduler"] = measure(
                cluster, "plain", pods, cluster.start_default_scheduler, "kube-scheduler"
            )
            results["default_scheduler"]["kube_scheduler"] = scheduler_metrics(
                cluster, "kube-scheduler"
            )
            # The lepton-scheduler profile without its extenders stanza: what the profile itself
            # (every node scored, MostAllocated) costs kube-scheduler, apart from the callout.
            cluster.kubectl("create", "namespace", "profile")
            submit_concurrently(
                cluster,
                ["create"],
                [pod(f"q-{i}", "profile", SCHEDULER_NAME, True) for i in range(pods)],
            )
            config = lepton_profile(stack.scheduler_url, cluster, percentage, single_verb)
            extenders = config.pop("extenders")
            results[PROFILE_RUN] = measure(
                cluster,
                "profile",
                pods,
                lambda: cluster.start_scheduler_with(PROFILE_RUN, config),
                PROFILE_RUN,
            )
            results[PROFILE_RUN]["kube_scheduler"] = scheduler_metrics(cluster, PROFILE_RUN)
            cluster.stop_processes([PROFILE_RUN])
            # lepton-scheduler with the Lepton scheduler, on the same fleet (which now holds the
            # first run's pods: both runs see a cluster with free GPUs on every node).
            cluster.kubectl("create", "namespace", "lepton")
            submit_concurrently(
                cluster,
                ["create"],
                [pod(f"l-{i}", "lepton", SCHEDULER_NAME, True) for i in range(pods)],
            )
            results["lepton_profile_with_scheduler"] = measure(
                cluster,
                "lepton",
                pods,
                lambda: cluster.start_scheduler_with(
                    SCHEDULER_NAME, {**config, "extenders": extenders}
                ),
                SCHEDULER_NAME,
            )
            ours = results["lepton_profile_with_scheduler"]
            ours["kube_scheduler"] = scheduler_metrics(cluster, SCHEDULER_NAME)
            ours["scheduler_phases"] = phase_breakdown(fetch(f"{stack.scheduler_url}/metrics"))
            ours["scheduler_share_of_algorithm"] = scheduler_share(
                ours["kube_scheduler"], ours["scheduler_phases"]
            )
            ours["cycle_breakdown_ms"] = cycle_breakdown(
                results[PROFILE_RUN]["kube_scheduler"],
                ours["kube_scheduler"],
                ours["scheduler_phases"],
            )
        finally:
            cluster.down()
    base = results["default_scheduler"]["pods_per_second"]
    ours = results["lepton_profile_with_scheduler"]["pods_per_second"]
    ratio = round(ours / base, 3) if base and ours else None
    profile = results[PROFILE_RUN]["pods_per_second"]
    return {
        "benchmark": "scheduling throughput with the Lepton scheduler / without, same run",
        "nodes": nodes,
        "pods_per_run": pods,
        "percentage_of_nodes_to_score": "as shipped (100)" if percentage is None else percentage,
        "extender_verbs": "filter-best" if single_verb else "filter, prioritize",
        **results,
        "ratio": ratio,
        "ratio_profile_without_scheduler": round(profile / base, 3) if base and profile else None,
        "ratio_scheduler_over_profile": round(ours / profile, 3) if profile and ours else None,
        "goal_ratio": GOAL_RATIO,
        "met_goal": ratio is not None and ratio >= GOAL_RATIO,
        "load_average_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["default scheduler", f"{SCHEDULER_NAME} + Lepton scheduler"]
    values = [
        result["default_scheduler"]["pods_per_second"] or 0,
        result["lepton_profile_with_scheduler"]["pods_per_second"] or 0,
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
    parser.add_argument(
        "--percentage-of-nodes-to-score",
        type=int,
        default=None,
        help=f"override the {SCHEDULER_NAME} profile's 100 (0: kube-scheduler's adaptive default)",
    )
    parser.add_argument(
        "--single-verb",
        action="store_true",
        help="ask the Lepton scheduler once a pod (filterVerb: filter-best, no prioritizeVerb)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.pods, args.nodes, args.percentage_of_nodes_to_score, args.single_verb)
    (args.out / "bench_throughput.json").write_text(json.dumps(result, indent=2))
    chart(result, args.out / "bench_throughput.png")
    print(json.dumps({k: v for k, v in result.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
