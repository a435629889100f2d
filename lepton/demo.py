"""``lepton demo``: the whole of Lepton on a laptop, with no cluster of one's own.

It brings up the real local control plane with a mixed GPU fleet, starts every
Lepton component on it (operator, the Lepton scheduler with the
``lepton-scheduler`` profile, the exporter's model backend, Prometheus, and the work simulator that
lets a job finish sooner on a faster GPU), applies the example budget and jobs
and an inference service (a plain Deployment with Lepton's service hints), and
shows them live: states, placements, budgets and watt-hours. When the jobs that
fit are done it raises the budget so the waiting job is admitted. Then it runs
the same workload again through the default kube-scheduler, compares the two,
and writes a report with a chart that says, per workload, where each scheduler
put it and why.

Every energy figure on a kwok fleet comes from the GPU profiles (the model), and
the report says so: kwok nodes have no meters.
"""

from __future__ import annotations

import functools
import html
import json
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lepton.api.v1alpha1 import held_watt_hours
from lepton.cluster import tools
from lepton.cluster.fleet import DEFAULT_FLEET, Fleet
from lepton.cluster.local import LocalCluster
from lepton.cluster.stack import LeptonStack
from lepton.core.energy import (
    chosen_power_limit_watts,
    job_duration_seconds,
    job_energy_watt_hours,
    node_idle_watts,
    service_power_watts,
    service_utilization,
)
from lepton.core.hints import hints_from_pod_metadata, owner_name
from lepton.core.names import (
    EVENT_REASON_SCORED,
    LABEL_JOB_NAME,
    LABEL_LEPTON_GPU_MODEL,
    RESOURCE_GPU,
    SCHEDULER_NAME,
)
from lepton.core.profiles import get_profile
from lepton.core.times import parse_time

# The example manifests ship in the package (lepton/examples/), so `lepton demo` runs from a wheel.
EXAMPLES_DIR = Path(str(resources.files("lepton").joinpath("examples")))
SERVICE_EXAMPLE = EXAMPLES_DIR / "services" / "inference-deployment.yaml"
NAMESPACE = "demo"
BASELINE_NAMESPACE = "demo-default-scheduler"
RAISED_LIMIT_WATT_HOURS = 3000
Echo = Callable[[str], None]


@dataclass(frozen=True)
class PodRun:
    """Where one pod of a job ran, and what its work cost there (energy model)."""

    job: str
    pod: str
    node: str
    gpu_model: str
    gpus: int
    duration_hours: float
    energy_default_limit_watt_hours: float
    energy_at_chosen_limit_watt_hours: float
    # When the pod ran, in hours of the demo's simulated clock (observed, not modelled).
    started_hours: float = 0.0
    finished_hours: float = 0.0
    # What the pod's node draws when idle (host + its GPUs): the price of keeping it awake.
    node_idle_watts: float = 0.0


@dataclass(frozen=True)
class ServiceRun:
    """Where one replica of a service ran, and what it draws there at its load (energy model)."""

    workload: str
    pod: str
    node: str
    gpu_model: str
    gpu_utilization: float  # of the GPU it got, at the default limit
    watts_default_limit: float
    watts_at_chosen_limit: float
    why: str = ""  # the Lepton scheduler's line for the chosen node (Lepton only)


def _union_hours(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, finish in sorted(intervals):
        if finish <= end:
            continue
        total += finish - max(start, end)
        end = finish
    return total


def node_on_hours(runs: list[PodRun]) -> dict[str, float]:
    """Per node, the hours at least one of the workload's pods ran there (the scale-in regime:
    a node is awake exactly while it has work)."""
    by_node: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        by_node.setdefault(r.node, []).append((r.started_hours, r.finished_hours))
    return {node: _union_hours(spans) for node, spans in by_node.items()}


class Demo:
    """One demo run on one local cluster."""

    def __init__(
        self,
        cluster: LocalCluster,
        echo: Echo,
        stop: threading.Event,
        time_compression: float = 360.0,
    ) -> None:
        self.time_compression = time_compression
        self.cluster = cluster
        self.stack = LeptonStack(cluster)
        self.echo = echo
        self.stop = stop

    # --- reading the cluster -------------------------------------------------------

    def _json(self, *args: str) -> Any:
        return json.loads(self.cluster.kubectl(*args, "-o", "json").stdout)

    def _lepton_jobs(self) -> list[dict[str, Any]]:
        return list(self._json("get", "leptonjobs", "-n", NAMESPACE)["items"])

    @functools.cached_property
    def _nodes(self) -> dict[str, tuple[str, int]]:
        """Each node's GPU model and GPU count: the demo's fleet does not change, read it once."""
        return {
            n["metadata"]["name"]: (
                n["metadata"]["labels"][LABEL_LEPTON_GPU_MODEL],
                int(n["status"]["capacity"].get(RESOURCE_GPU, 0)),
            )
            for n in self._json("get", "nodes")["items"]
        }

    def _node_models(self) -> dict[str, str]:
        return {name: model for name, (model, _) in self._nodes.items()}

    def _pod_runs(self, namespace: str) -> list[PodRun]:
        models = self._node_models()
        runs = []
        for pod in self._json("get", "pods", "-n", namespace, "-l", LABEL_JOB_NAME)["items"]:
            meta, node = pod["metadata"], pod["spec"].get("nodeName")
            hints = hints_from_pod_metadata(meta.get("labels"), meta.get("annotations"))
            if hints is None or not node:
                continue
            model = models[node]
            started, finished = _observed_span(pod)
            to_hours = self.time_compression / 3600
            work = hints.work_reference_gpu_hours / max(1, hints.replicas)
            limit = chosen_power_limit_watts(get_profile(model), hints.power_cap)
            runs.append(
                PodRun(
                    job=hints.job_name,
                    pod=meta["name"],
                    node=node,
                    gpu_model=model,
                    gpus=hints.gpus_per_replica,
                    duration_hours=job_duration_seconds(model, work, hints.gpus_per_replica) / 3600,
                    energy_default_limit_watt_hours=job_energy_watt_hours(
                        model, work, hints.gpus_per_replica
                    ),
                    energy_at_chosen_limit_watt_hours=job_energy_watt_hours(
                        model, work, hints.gpus_per_replica, limit
                    ),
                    started_hours=started * to_hours,
                    finished_hours=finished * to_hours,
                    node_idle_watts=node_idle_watts(get_profile(model), self._nodes[node][1]),
                )
            )
        return runs

    def _scored_lines(self, namespace: str) -> dict[str, str]:
        """Per pod, the Lepton scheduler's LeptonScored Event message (why it went where it did)."""
        events = self._json(
            "get", "events", "-n", namespace, "--field-selector", f"reason={EVENT_REASON_SCORED}"
        )["items"]
        return {e["involvedObject"]["name"]: str(e.get("message", "")) for e in events}

    def _service_runs(self, namespace: str) -> list[ServiceRun]:
        doc = yaml.safe_load(SERVICE_EXAMPLE.read_text())
        selector = ",".join(f"{k}={v}" for k, v in doc["spec"]["selector"]["matchLabels"].items())
        models = self._node_models()
        why = self._scored_lines(namespace)
        runs = []
        for pod in self._json("get", "pods", "-n", namespace, "-l", selector)["items"]:
            meta, node = pod["metadata"], pod["spec"].get("nodeName")
            hints = hints_from_pod_metadata(
                meta.get("labels"), meta.get("annotations"), owner_name(meta), meta["name"]
            )
            if hints is None or not node:
                continue
            profile = get_profile(models[node])
            limit = chosen_power_limit_watts(profile, hints.power_cap)
            demand = hints.reference_utilization_percent
            runs.append(
                ServiceRun(
                    workload=doc["metadata"]["name"],
                    pod=meta["name"],
                    node=node,
                    gpu_model=models[node],
                    gpu_utilization=service_utilization(profile, demand, None),
                    watts_default_limit=service_power_watts(profile, demand, 1),
                    watts_at_chosen_limit=service_power_watts(profile, demand, 1, 1000, limit),
                    why=_top_node_line(why.get(meta["name"], ""), node),
                )
            )
        return runs

    def _apply_service(self, namespace: str, lepton: bool) -> list[ServiceRun]:
        """The example service in ``namespace``: through lepton-scheduler, or the default one."""
        doc = yaml.safe_load(SERVICE_EXAMPLE.read_text())
        if not lepton:
            doc["spec"]["template"]["spec"].pop("schedulerName", None)
        replicas = int(doc["spec"]["replicas"])
        self.cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            runs = self._service_runs(namespace)
            if len(runs) >= replicas and (not lepton or all(r.why for r in runs)):
                return runs
            self.stop.wait(2)
        return self._service_runs(namespace)

    def _cluster_watts(self) -> str:
        import urllib.parse
        import urllib.request

        query = urllib.parse.urlencode({"query": "sum(lepton_gpu_power_watts)"})
        try:
            with urllib.request.urlopen(
                f"{self.stack.prometheus_url}/api/v1/query?{query}", timeout=3
            ) as response:
                result = json.load(response)["data"]["result"]
        except OSError:
            return "?"
        return f"{float(result[0]['value'][1]):.0f}" if result else "?"

    # --- the live view ------------------------------------------------------------

    def show(self, title: str) -> None:
        jobs = self._lepton_jobs()
        budgets = self._json("get", "energybudgets", "-n", NAMESPACE)["items"]
        pods = self._json("get", "pods", "-n", NAMESPACE, "-l", LABEL_JOB_NAME)["items"]
        models = self._node_models()
        where: dict[str, list[str]] = {}
        for pod in pods:
            node = pod["spec"].get("nodeName")
            if node:
                job = pod["metadata"]["labels"][LABEL_JOB_NAME]
                where.setdefault(job, []).append(f"{node}({models.get(node, '?')})")
        lines = [f"── {title} ── cluster GPU power now: {self._cluster_watts()} W (model)"]
        lines.append(f"  {'JOB':<17}{'STATE':<10}{'EST Wh':>9}{'USED Wh':>9}  PLACED ON")
        for job in sorted(jobs, key=lambda j: j["metadata"]["name"]):
            st = job.get("status", {})
            name = job["metadata"]["name"]
            state = st.get("state") or "Pending"
            est = st.get("estimatedWattHours")
            used = st.get("consumedWattHours")
            lines.append(
                f"  {name:<16} {state:<10}{_num(est):>9}{_num(used):>9}  "
                + (", ".join(sorted(set(where.get(name, [])))) or "-")
            )
        for b in budgets:
            st = b.get("status", {})
            lines.append(
                f"  budget {b['metadata']['name']}: limit {b['spec']['limitWattHours']} Wh, used "
                f"{_num(st.get('consumedWattHours'))}, "
                f"held {_num(held_watt_hours(st))}, "
                f"remaining {_num(st.get('remainingWattHours'))}, queued {st.get('queuedJobs', 0)}"
            )
        self.echo("\n".join(lines))

    def wait_until(self, done: Callable[[], bool], timeout: float, title: str) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            self.show(title)
            if done():
                return True
            if time.monotonic() > deadline:
                self.echo(f"[demo] gave up waiting after {timeout:.0f} s")
                return False
            self.stop.wait(3)
        return False

    # --- the story -------------------------------------------------------------------

    def run_lepton(self) -> tuple[list[PodRun], list[ServiceRun]]:
        self.cluster.kubectl("create", "namespace", NAMESPACE)
        self.echo(
            f"[demo] kubectl apply -n {NAMESPACE} -f "
            "lepton/examples/services/inference-deployment.yaml  (a Deployment placed as a service)"
        )
        services = self._apply_service(NAMESPACE, lepton=True)
        for run in services:
            self.echo(f"[demo]   {run.pod} → {run.node} ({run.gpu_model}): {run.why}")
        docs = sorted(EXAMPLES_DIR.glob("*.yaml"))
        self.echo(f"[demo] kubectl apply -n {NAMESPACE} -f lepton/examples/  ({len(docs)} files)")
        for path in docs:
            self.cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(path))

        def settled() -> bool:
            states = [(j.get("status", {}).get("state") or "Pending") for j in self._lepton_jobs()]
            return "Pending" not in states and all(
                s in ("Finished", "Waiting", "Failed") for s in states
            )

        self.wait_until(settled, 240, "Lepton: jobs that fit run, the one that does not waits")
        budget = self._json("get", "energybudgets", "-n", NAMESPACE)["items"][0]["metadata"]["name"]
        self.echo(
            f"[demo] raising budget {budget} to {RAISED_LIMIT_WATT_HOURS} Wh: "
            "the waiting job is admitted"
        )
        patch = json.dumps({"spec": {"limitWattHours": RAISED_LIMIT_WATT_HOURS}})
        self.cluster.kubectl(
            "patch", "energybudget", budget, "-n", NAMESPACE, "--type=merge", "-p", patch
        )

        def all_finished() -> bool:
            return all(
                (j.get("status", {}).get("state") == "Finished") for j in self._lepton_jobs()
            )

        self.wait_until(all_finished, 300, "Lepton: every job runs to completion")
        return self._pod_runs(NAMESPACE), services

    def run_default_scheduler(self) -> tuple[list[PodRun], list[ServiceRun]]:
        """The same pods, as plain Jobs and a Deployment, through the default kube-scheduler."""
        self.cluster.kubectl("create", "namespace", BASELINE_NAMESPACE)
        services = self._apply_service(BASELINE_NAMESPACE, lepton=False)
        children = self._json("get", "jobs", "-n", NAMESPACE)["items"]
        for child in children:
            template = child["spec"]["template"]
            template["spec"].pop("schedulerName", None)
            labels = {
                k: v
                for k, v in template["metadata"].get("labels", {}).items()
                if "controller-uid" not in k
                and k not in ("job-name", "batch.kubernetes.io/job-name")
            }
            template["metadata"] = {
                "labels": labels,
                "annotations": template["metadata"].get("annotations", {}),
            }
            job = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": child["metadata"]["name"], "namespace": BASELINE_NAMESPACE},
                "spec": {
                    "completions": child["spec"].get("completions", 1),
                    "parallelism": child["spec"].get("parallelism", 1),
                    "completionMode": child["spec"].get("completionMode", "NonIndexed"),
                    "template": template,
                },
            }
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(job))
        self.echo(f"[demo] the same {len(children)} jobs through the default scheduler …")

        def complete() -> bool:
            jobs = self._json("get", "jobs", "-n", BASELINE_NAMESPACE)["items"]
            return all(
                j.get("status", {}).get("succeeded", 0) >= j["spec"]["completions"] for j in jobs
            )

        deadline = time.monotonic() + 300
        while not complete() and not self.stop.is_set() and time.monotonic() < deadline:
            self.stop.wait(3)
        return self._pod_runs(BASELINE_NAMESPACE), services


def _top_node_line(message: str, node: str) -> str:
    """The part of a LeptonScored message about ``node`` (the one it was placed on)."""
    parts = message.split("; top nodes: ", 1)
    for line in (parts[1] if len(parts) == 2 else "").split("; "):
        if line.startswith(f"{node} "):
            return f"{parts[0]}: {line}"
    return parts[0]


def _observed_span(pod: dict[str, Any]) -> tuple[float, float]:
    """When the pod started and finished, in wall seconds since the epoch."""
    status = pod.get("status") or {}
    start = parse_time(str(status.get("startTime")))
    assert start is not None, "a finished pod has a startTime"
    finish = start
    for container in status.get("containerStatuses") or []:
        ended = ((container.get("state") or {}).get("terminated") or {}).get("finishedAt")
        if ended:
            finish = max(finish, parse_time(ended) or finish)
    return start.timestamp(), finish.timestamp()


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


def summarize(
    lepton: list[PodRun],
    default: list[PodRun],
    lepton_services: Sequence[ServiceRun] = (),
    default_services: Sequence[ServiceRun] = (),
) -> dict[str, Any]:
    """Totals per scheduler: energy at default limits (placement alone) and at Lepton's limits.

    Services are counted apart, in watts at their load: they run until deleted, so their
    figure is a draw, not an energy to completion.
    """

    def totals(runs: list[PodRun]) -> dict[str, float]:
        on_hours = node_on_hours(runs)
        idle = {r.node: r.node_idle_watts for r in runs}
        idle_watt_hours = sum(idle[node] * hours for node, hours in on_hours.items())
        gpu = sum(r.energy_default_limit_watt_hours for r in runs)
        return {
            "energy_default_limit_watt_hours": gpu,
            "energy_at_chosen_limit_watt_hours": sum(
                r.energy_at_chosen_limit_watt_hours for r in runs
            ),
            "gpu_hours": sum(r.duration_hours * r.gpus for r in runs),
            "pods": len(runs),
            "nodes_used": len(on_hours),
            "node_on_hours": sum(on_hours.values()),
            "idle_watt_hours_scale_in": idle_watt_hours,
            "energy_scale_in_watt_hours": gpu + idle_watt_hours,
        }

    ours, theirs = totals(lepton), totals(default)
    placement = 1 - ours["energy_default_limit_watt_hours"] / max(
        theirs["energy_default_limit_watt_hours"], 1e-9
    )
    with_caps = 1 - ours["energy_at_chosen_limit_watt_hours"] / max(
        theirs["energy_default_limit_watt_hours"], 1e-9
    )
    scale_in = 1 - ours["energy_scale_in_watt_hours"] / max(
        theirs["energy_scale_in_watt_hours"], 1e-9
    )
    ours_watts = sum(r.watts_default_limit for r in lepton_services)
    theirs_watts = sum(r.watts_default_limit for r in default_services)
    services = {
        "lepton_watts_default_limit": ours_watts,
        "lepton_watts_at_chosen_limit": sum(r.watts_at_chosen_limit for r in lepton_services),
        "default_scheduler_watts": theirs_watts,
        "saving_from_placement": 1 - ours_watts / theirs_watts if theirs_watts else 0.0,
        "lepton_pods": [r.__dict__ for r in lepton_services],
        "default_scheduler_pods": [r.__dict__ for r in default_services],
    }
    return {
        "lepton": ours,
        "default_scheduler": theirs,
        "services": services,
        "saving_from_placement": placement,
        "saving_with_scale_in": scale_in,
        "saving_with_power_caps": with_caps,
        "lepton_pods": [r.__dict__ for r in lepton],
        "default_scheduler_pods": [r.__dict__ for r in default],
    }


def write_report(summary: dict[str, Any], out: Path) -> Path:
    """report.html (+ energy.png when matplotlib is installed) explaining every number."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    chart = ""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (gpu_ax, node_ax) = plt.subplots(1, 2, figsize=(11, 3.5))
        labels = ["default scheduler", "Lepton (placement)", "Lepton (+ power caps)"]
        values = [
            summary["default_scheduler"]["energy_default_limit_watt_hours"],
            summary["lepton"]["energy_default_limit_watt_hours"],
            summary["lepton"]["energy_at_chosen_limit_watt_hours"],
        ]
        gpu_ax.barh(labels, values, color=["#999999", "#4c9be8", "#1f5fa8"])
        gpu_ax.set_xlabel("GPU energy, Wh (model estimate)")
        gpu_ax.set_title("Nodes always on: the GPUs' energy")
        node_ax.barh(
            ["default scheduler", "Lepton"],
            [
                summary["default_scheduler"]["energy_scale_in_watt_hours"],
                summary["lepton"]["energy_scale_in_watt_hours"],
            ],
            color=["#999999", "#4c9be8"],
        )
        node_ax.set_xlabel("GPU energy + idle of woken nodes, Wh (model estimate)")
        node_ax.set_title("Nodes scaled in when empty")
        fig.tight_layout()
        fig.savefig(out / "energy.png", dpi=110)
        plt.close(fig)
        chart = '<img src="energy.png" alt="energy by scheduler">'
    except ImportError:
        chart = "<p>(install matplotlib for the chart)</p>"

    def rows(runs: list[dict[str, Any]]) -> str:
        return "".join(
            f"<tr><td>{html.escape(r['job'])}</td><td>{html.escape(r['pod'])}</td>"
            f"<td>{html.escape(r['node'])}</td><td>{r['gpu_model']}</td><td>{r['gpus']}</td>"
            f"<td>{r['duration_hours']:.2f}</td><td>{r['energy_default_limit_watt_hours']:.1f}</td>"
            f"<td>{r['energy_at_chosen_limit_watt_hours']:.1f}</td></tr>"
            for r in runs
        )

    head = (
        "<tr><th>job</th><th>pod</th><th>node</th><th>GPU</th><th>GPUs</th><th>hours</th>"
        "<th>Wh at default limit</th><th>Wh at Lepton's limit</th></tr>"
    )
    s = summary
    services = s.get("services") or {}

    def models(runs: list[dict[str, Any]], key: str, name: str) -> str:
        counts: dict[str, int] = {}
        for r in runs:
            if r[key] == name:
                counts[r["gpu_model"]] = counts.get(r["gpu_model"], 0) + 1
        return ", ".join(f"{n} x {m}" for m, n in sorted(counts.items())) or "-"

    workload_rows = "".join(
        f"<tr><td>{html.escape(job)}</td><td>Batch</td>"
        f"<td>{models(s['lepton_pods'], 'job', job)}</td>"
        f"<td>{models(s['default_scheduler_pods'], 'job', job)}</td>"
        "<td>least energy to completion among its gpuModels</td></tr>"
        for job in sorted({r["job"] for r in s["lepton_pods"]})
    ) + "".join(
        f"<tr><td>{html.escape(name)}</td><td>Service</td>"
        f"<td>{models(services['lepton_pods'], 'workload', name)}</td>"
        f"<td>{models(services['default_scheduler_pods'], 'workload', name)}</td>"
        f"<td>{html.escape(services['lepton_pods'][0]['why'])}</td></tr>"
        for name in sorted({r["workload"] for r in services.get("lepton_pods", [])})
    )
    service_rows = "".join(
        f"<tr><td>{who}</td><td>{html.escape(r['pod'])}</td><td>{html.escape(r['node'])}</td>"
        f"<td>{r['gpu_model']}</td><td>{100 * r['gpu_utilization']:.0f} %</td>"
        f"<td>{r['watts_default_limit']:.1f}</td><td>{r['watts_at_chosen_limit']:.1f}</td></tr>"
        for who, key in (("Lepton", "lepton_pods"), ("default scheduler", "default_scheduler_pods"))
        for r in services.get(key, [])
    )
    service_section = (
        f"""<h2>The service: watts at its load</h2>
<p>A service runs until it is deleted, so it is compared by what it draws at its load, not by
energy to completion: the idle draw of the GPU it holds plus the active draw of its load
(<em>model estimates</em>). Lepton: {services["lepton_watts_default_limit"]:.1f} W
({services["lepton_watts_at_chosen_limit"]:.1f} W with its power caps); default scheduler:
{services["default_scheduler_watts"]:.1f} W (<b>{100 * services["saving_from_placement"]:.1f} %</b>
less by placement). A faster GPU does not shorten a service: a big GPU only idles more.</p>
<table><tr><th>scheduler</th><th>pod</th><th>node</th><th>GPU</th><th>GPU busy</th>
<th>W at default limit</th><th>W at Lepton's limit</th></tr>{service_rows}</table>"""
        if services
        else ""
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Lepton demo report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>Lepton demo report</h1>
<p>The same workload — the jobs in <code>lepton/examples/</code> — ran twice on the same local
cluster of kwok GPU nodes: first placed by Lepton's scheduler through the
<code>{SCHEDULER_NAME}</code> profile, then as plain Jobs through the default kube-scheduler.</p>
<h2>What the numbers mean</h2>
<ul>
<li><b>Every energy figure here is an estimate from Lepton's energy model</b> (GPU profiles:
power and speed per model and power limit; the A40 from measured sweeps, the others from
datasheets). kwok nodes have no GPUs and no meters; on a real cluster the exporter reads NVML.</li>
<li><b>Wh at default limit</b>: the GPUs' energy for the pod's share of the work on the GPU model it
landed on, at the GPU's default power limit: it isolates the effect of <em>placement</em>.</li>
<li><b>Wh at Lepton's limit</b>: the same at the power limit the job's <code>powerCap</code> asks
for (<code>Auto</code> = the profile's energy-optimal limit within 5 % slowdown), which the exporter
applies through NVML on real GPUs.</li>
<li><b>hours</b>: the pod's run time on that GPU (work ÷ the model's relative speed); the demo's
clock runs faster than real time.</li>
<li><b>Nodes scaled in when empty</b>: as a cluster autoscaler or node sleep would do, a node
is counted awake only while one of the workload's pods runs on it (from the pods' observed start
and finish times on the demo's clock), and pays its idle power (host and GPUs, from the profiles)
for that time. Consolidating work on fewer nodes saves this energy; with every node always on,
it is paid whatever the placement.</li>
</ul>
<h2>Summary</h2>
<p><em>Model estimates, not measurements.</em></p>
<p>Default scheduler: {s["default_scheduler"]["energy_default_limit_watt_hours"]:.0f} Wh.
Lepton, placement alone: {s["lepton"]["energy_default_limit_watt_hours"]:.0f} Wh
(<b>{100 * s["saving_from_placement"]:.1f} %</b> less).
Lepton with its power caps: {s["lepton"]["energy_at_chosen_limit_watt_hours"]:.0f} Wh
(<b>{100 * s["saving_with_power_caps"]:.1f} %</b> less).</p>
<p>With empty nodes scaled in: default scheduler {s["default_scheduler"]["nodes_used"]} nodes for
{s["default_scheduler"]["node_on_hours"]:.1f} node-hours,
{s["default_scheduler"]["energy_scale_in_watt_hours"]:.0f} Wh; Lepton
{s["lepton"]["nodes_used"]} nodes for {s["lepton"]["node_on_hours"]:.1f} node-hours,
{s["lepton"]["energy_scale_in_watt_hours"]:.0f} Wh
(<b>{100 * s["saving_with_scale_in"]:.1f} %</b> less).</p>
{chart}
<h2>Per workload: where each scheduler put it, and why</h2>
<table><tr><th>workload</th><th>kind</th><th>Lepton</th><th>default scheduler</th>
<th>why Lepton chose it</th></tr>{workload_rows}</table>
<p>The default scheduler scores cpu and memory only (LeastAllocated) and breaks ties at random:
it does not know what a GPU draws.</p>
{service_section}
<h2>Lepton's placements</h2><table>{head}{rows(s["lepton_pods"])}</table>
<h2>The default scheduler's placements</h2><table>{head}{rows(s["default_scheduler_pods"])}</table>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path


def run(
    state_dir: Path | None,
    echo: Echo,
    fleet: Fleet = DEFAULT_FLEET,
    wait: bool = True,
    time_compression: float = 360.0,
    report_dir: Path = Path("results/demo"),
) -> dict[str, Any]:
    """Build what is missing, run the whole story, write the report; Ctrl-C stops everything."""
    tools.build_all(("etcd", "kwok", "kubernetes"), progress=echo)
    cluster = LocalCluster(state_dir, progress=echo)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    summary: dict[str, Any] = {}
    try:
        cluster.up(fleet, hold_lepton_pods=True)
        demo = Demo(cluster, echo, stop, time_compression)
        echo(
            "[demo] starting Lepton: CRDs, exporter (model), Prometheus, Lepton scheduler, operator"
        )
        demo.stack.start_all(time_compression=time_compression)
        echo(f"[demo] one wall second stands for {time_compression:.0f} s of GPU work")
        lepton, lepton_services = demo.run_lepton()
        default, default_services = demo.run_default_scheduler() if not stop.is_set() else ([], [])
        if lepton and default:
            summary = summarize(lepton, default, lepton_services, default_services)
            report = write_report(summary, report_dir)
            echo("")
            echo(
                f"Summary (energy model): default scheduler "
                f"{summary['default_scheduler']['energy_default_limit_watt_hours']:.0f} Wh, Lepton "
                f"{summary['lepton']['energy_default_limit_watt_hours']:.0f} Wh by placement "
                f"({100 * summary['saving_from_placement']:.1f} % less), "
                f"{summary['lepton']['energy_at_chosen_limit_watt_hours']:.0f} Wh with power caps "
                f"({100 * summary['saving_with_power_caps']:.1f} % less); with empty nodes "
                f"scaled in {summary['default_scheduler']['energy_scale_in_watt_hours']:.0f} Wh "
                f"against {summary['lepton']['energy_scale_in_watt_hours']:.0f} Wh "
                f"({100 * summary['saving_with_scale_in']:.1f} % less)."
            )
            services = summary["services"]
            echo(
                f"Service (energy model, watts at its load): default scheduler "
                f"{services['default_scheduler_watts']:.1f} W, Lepton "
                f"{services['lepton_watts_default_limit']:.1f} W by placement "
                f"({100 * services['saving_from_placement']:.1f} % less), "
                f"{services['lepton_watts_at_chosen_limit']:.1f} W with power caps."
            )
            echo(f"Report: {report.resolve()}")
        echo("")
        echo(f"The cluster is up:  export KUBECONFIG={cluster.kubeconfig}")
        echo(f"                    {tools.tool_path('kubectl')} get leptonjobs,energybudgets -A")
        echo(
            f"                    LEPTON_PROMETHEUS_URL={demo.stack.prometheus_url} "
            "kubectl lepton status"
        )
        if wait and not stop.is_set():
            echo("Press Ctrl-C to stop everything.")
            stop.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        echo("[demo] stopping every process")
        cluster.down()
    return summary
