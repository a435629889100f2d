"""Admission throughput: 500 LeptonJobs applied at once, seconds until each is Admitted or Waiting.

Runs the real operator (``python -m lepton_operator``) against the local control plane. The
budget fits 100 of the jobs; their pods go to a scheduler that does not exist, so no job ends
and frees room: the figure is the operator's admission work alone (goal: under 30 s).

    python -m bench.bench_admission [--jobs 500] [--out results] [--baseline-ref main]

``--baseline-ref`` also runs the operator of another commit (checked out in a temporary git
worktree), alternating with this tree's on fresh clusters, so that before and after come from
the same machine in one run; the result has both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.submit import submit_concurrently
from lepton.api.jobspec import estimate_energy
from lepton.api.v1alpha1 import LeptonJobSpec
from lepton.cluster import tools
from lepton.cluster.local import LocalCluster
from lepton.cluster.stack import LeptonStack
from tests.support import builders

REPO = Path(__file__).resolve().parents[1]
APPLY_CLIENTS = 8
GOAL_SECONDS = 30.0
NAMESPACE = "bench-admission"


def lepton_job(name: str) -> dict[str, Any]:
    return builders.lepton_job(name, budget="bench", namespace=NAMESPACE)


def measure(
    cluster: LocalCluster, jobs: int, admit: int, operator_src: Path = REPO
) -> dict[str, Any]:
    estimate = estimate_energy(LeptonJobSpec.model_validate(lepton_job("x")["spec"])).watt_hours
    limit = math.ceil(admit * estimate)
    LeptonStack(cluster).install_crds()
    cluster.kubectl("create", "namespace", NAMESPACE)
    budget = builders.energy_budget(limit, "bench", namespace=NAMESPACE)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(budget))
    operator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lepton_operator",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--namespace",
            NAMESPACE,
            "--scheduler-name",
            "no-such-scheduler",
        ],
        env=_operator_env(cluster, operator_src),
        cwd=operator_src,
    )
    try:
        time.sleep(3)  # let the operator start and settle on the empty budget
        items = [lepton_job(f"job-{i:04d}") for i in range(jobs)]
        started = time.monotonic()
        # "At once": several clients apply their share concurrently.
        submit_concurrently(cluster, ["apply", "--server-side"], items, APPLY_CLIENTS)
        applied_s = time.monotonic() - started
        series: list[tuple[float, int, int]] = []
        settled_s = None
        while time.monotonic() - started < 300:
            out = cluster.kubectl("get", "leptonjobs", "-n", NAMESPACE, "-o", "json", timeout=120)
            states = [(i.get("status") or {}).get("state") for i in json.loads(out.stdout)["items"]]
            admitted = sum(1 for s in states if s in ("Admitted", "Running"))
            waiting = sum(1 for s in states if s == "Waiting")
            series.append((time.monotonic() - started, admitted, waiting))
            if admitted + waiting == jobs:
                settled_s = series[-1][0]
                break
            time.sleep(0.5)
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    return {
        "jobs": jobs,
        "budget_fits_jobs": admit,
        "apply_seconds": round(applied_s, 2),
        "seconds_until_all_admitted_or_waiting": None if settled_s is None else round(settled_s, 2),
        "admitted": series[-1][1] if series else 0,
        "waiting": series[-1][2] if series else 0,
        "goal_seconds": GOAL_SECONDS,
        "met_goal": settled_s is not None and settled_s < GOAL_SECONDS,
        "series": series,
    }


def _operator_env(cluster: LocalCluster, operator_src: Path) -> dict[str, str]:
    """The cluster's environment, importing Lepton from ``operator_src`` (another checkout)."""
    env = cluster.env()
    if operator_src != REPO:
        paths = [operator_src / p for p in ("", "operator", "exporter", "scheduler")]
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    return env


def run_once(jobs: int, admit: int, operator_src: Path = REPO) -> dict[str, Any]:
    """One measurement on a fresh local cluster."""
    with tempfile.TemporaryDirectory(prefix="lepton-bench-admission-") as tmp:
        cluster = LocalCluster(Path(tmp))
        cluster.up()
        try:
            return measure(cluster, jobs, admit, operator_src)
        finally:
            cluster.down()


def compare(jobs: int, admit: int, ref: str, repeats: int) -> dict[str, Any]:
    """This tree's operator against ``ref``'s, alternating, ``repeats`` runs each."""
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="lepton-bench-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=REPO, check=True)
        try:
            for _ in range(repeats):
                runs["baseline"].append(run_once(jobs, admit, tree))
                runs["current"].append(run_once(jobs, admit))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False
            )

    def seconds(side: str) -> list[float | None]:
        return [r["seconds_until_all_admitted_or_waiting"] for r in runs[side]]

    result = dict(runs["current"][-1])
    result.update(
        baseline_ref=ref,
        baseline_seconds=seconds("baseline"),
        current_seconds=seconds("current"),
        baseline_series=runs["baseline"][-1]["series"],
    )
    return result


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p[0] for p in result["series"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, [p[1] for p in result["series"]], label="Admitted")
    ax.plot(t, [p[2] for p in result["series"]], label="Waiting")
    ax.axvline(GOAL_SECONDS, color="red", linestyle="--", label=f"goal ({GOAL_SECONDS:.0f} s)")
    ax.set_xlabel("seconds after `kubectl apply`")
    ax.set_ylabel("LeptonJobs")
    ax.set_title(
        f"Admission of {result['jobs']} LeptonJobs (budget fits {result['budget_fits_jobs']})"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_admission")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--admit", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--baseline-ref", help="also run this commit's operator (e.g. main)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, with a baseline")
    args = parser.parse_args(argv)
    tools.build_all(("etcd", "kwok", "kubernetes"))
    if args.baseline_ref:
        result = compare(args.jobs, args.admit, args.baseline_ref, args.repeats)
    else:
        result = run_once(args.jobs, args.admit)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_admission.json").write_text(json.dumps(result, indent=2))
    chart(result, args.out / "bench_admission.png")
    summary = {k: v for k, v in result.items() if not k.endswith("series")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
