"""Generate the Grafana dashboards and keep the Helm chart's copies in step.

The dashboards are written here as code, not exported from a Grafana UI, so
that every panel's query sits beside the metric it reads (docs/metrics.md,
lepton_scheduler/metrics.py) and a review sees the PromQL, not 2,000 lines of
layout. Helm cannot package files outside the chart's folder, so the chart
carries copies of ``lepton/api/crds/*.yaml`` and ``deploy/dashboards/*.json``; this script
writes them, and ``--check`` (run by the tests) fails when a copy drifts.

    python scripts/deploy_assets.py           # write deploy/dashboards and the chart copies
    python scripts/deploy_assets.py --check   # exit 1, naming the stale files
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lepton.api import crd_dir

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = REPO / "deploy" / "dashboards"
CHART_DIR = REPO / "deploy" / "helm" / "lepton"
CRDS_DIR = crd_dir()

DS = {"type": "prometheus", "uid": "${datasource}"}
J_PER_WH = 3600


def _target(expr: str, legend: str, ref: str, instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
    }
    if instant:
        target.update(instant=True, range=False, format="table")
    return target


def _panel(
    kind: str,
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    unit: str,
    grid: tuple[int, int, int, int],
    instant: bool = False,
    **options: Any,
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, **options.pop("defaults", {})}, "overrides": []},
        "options": options,
        "targets": [
            _target(expr, legend, chr(ord("A") + i), instant)
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "refresh": 2,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def _dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
) -> dict[str, Any]:
    for panel_id, panel in enumerate(panels, start=1):
        panel["id"] = panel_id
    datasource = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["lepton", "energy", "gpu"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {"list": [datasource, *variables]},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["lepton"], "title": "Lepton", "asDropdown": True}
        ],
        "panels": panels,
    }


NODE = _variable("node", "Node", "label_values(lepton_exporter_up, node)")
NAMESPACE = _variable(
    "namespace", "Namespace", "label_values(lepton_pod_gpu_active_energy_joules_total, namespace)"
)
MODEL = _variable("gpu_model", "GPU model", "label_values(lepton_gpu_power_watts, gpu_model)")


def cluster_energy() -> dict[str, Any]:
    sel = '{node=~"$node"}'
    panels = [
        _panel(
            "stat",
            "GPU power now",
            "Sum of every GPU's board power. source=model series are estimates, not measurements.",
            [(f"sum(lepton_gpu_power_watts{sel})", "GPU power")],
            "watt",
            (0, 0, 6, 5),
        ),
        _panel(
            "stat",
            "GPU energy in range",
            "GPU energy over the dashboard's time range (watt-hours).",
            [
                (
                    f"sum(increase(lepton_gpu_energy_joules_total{sel}[$__range])) / {J_PER_WH}",
                    "GPU energy",
                )
            ],
            "watth",
            (6, 0, 6, 5),
        ),
        _panel(
            "stat",
            "CPU energy in range",
            "CPU package energy from RAPL over the time range (watt-hours).",
            [
                (
                    f"sum(increase(lepton_cpu_energy_joules_total{sel}[$__range])) / {J_PER_WH}",
                    "CPU energy",
                )
            ],
            "watth",
            (12, 0, 6, 5),
        ),
        _panel(
            "stat",
            "Share of GPU energy spent idle",
            "Idle energy over all GPU energy in the range: what consolidation can still save.",
            [
                (
                    f"sum(increase(lepton_gpu_idle_energy_joules_total{sel}[$__range])) / "
                    f"sum(increase(lepton_gpu_energy_joules_total{sel}[$__range]))",
                    "idle share",
                )
            ],
            "percentunit",
            (18, 0, 6, 5),
        ),
        _panel(
            "timeseries",
            "Cluster power by source",
            "GPU power by meter source (nvml = measured, model = estimated), and CPU power (RAPL).",
            [
                (f"sum by (source) (lepton_gpu_power_watts{sel})", "GPU ({{source}})"),
                (
                    f"sum(rate(lepton_cpu_energy_joules_total{sel}[$__rate_interval]))",
                    "CPU (rapl)",
                ),
            ],
            "watt",
            (0, 5, 12, 9),
        ),
        _panel(
            "timeseries",
            "Where GPU energy goes",
            "GPU power split into idle, attributed to pods, and unattributed (busy, no known pod).",
            [
                (
                    f"sum(rate(lepton_gpu_idle_energy_joules_total{sel}[$__rate_interval]))",
                    "idle",
                ),
                (
                    f"sum(rate(lepton_pod_gpu_active_energy_joules_total{sel}[$__rate_interval]))",
                    "pods",
                ),
                (
                    "sum(rate(lepton_gpu_unattributed_energy_joules_total"
                    f"{sel}[$__rate_interval]))",
                    "unattributed",
                ),
            ],
            "watt",
            (12, 5, 12, 9),
            defaults={"custom": {"stacking": {"mode": "normal"}, "fillOpacity": 30}},
        ),
        _panel(
            "timeseries",
            "GPU power by node",
            "Each node's GPU power.",
            [(f"sum by (node) (lepton_gpu_power_watts{sel})", "{{node}}")],
            "watt",
            (0, 14, 12, 9),
        ),
        _panel(
            "timeseries",
            "Cumulative GPU energy by node",
            "GPU energy since the exporter started, per node (watt-hours).",
            [
                (
                    f"sum by (node) (lepton_gpu_energy_joules_total{sel}) / {J_PER_WH}",
                    "{{node}}",
                )
            ],
            "watth",
            (12, 14, 12, 9),
        ),
    ]
    return _dashboard(
        "lepton-cluster-energy",
        "Lepton / Cluster power and energy",
        "Cluster GPU and CPU power and energy over time, from Lepton's exporter.",
        panels,
        [NODE],
    )


def budgets_and_jobs() -> dict[str, Any]:
    ns = '{namespace=~"$namespace"}'
    pod_energy_range = f"increase(lepton_pod_gpu_active_energy_joules_total{ns}[$__range])"
    pod_power = f"rate(lepton_pod_gpu_active_energy_joules_total{ns}[$__rate_interval])"
    job_energy = f"lepton_leptonjob_consumed_joules{ns}"
    panels = [
        _panel(
            "bargauge",
            "Budget use against limit",
            "Each EnergyBudget's consumed watt-hours in its current period over its limit "
            "(the operator's accounting).",
            [
                (
                    f"lepton_energybudget_consumed_joules{ns} / "
                    f"lepton_energybudget_limit_joules{ns}",
                    "{{namespace}}/{{energybudget}}",
                )
            ],
            "percentunit",
            (0, 0, 12, 8),
            defaults={
                "min": 0,
                "max": 1,
                "thresholds": {
                    "mode": "absolute",
                    "steps": [
                        {"color": "green", "value": None},
                        {"color": "orange", "value": 0.8},
                        {"color": "red", "value": 1},
                    ],
                },
            },
            displayMode="gradient",
            orientation="horizontal",
        ),
        _panel(
            "timeseries",
            "Budget consumed and limit",
            "Consumed and limit watt-hours of each EnergyBudget over time.",
            [
                (
                    "sum by (namespace, energybudget) "
                    f"(lepton_energybudget_consumed_joules{ns}) / {J_PER_WH}",
                    "{{namespace}}/{{energybudget}} consumed",
                ),
                (
                    "sum by (namespace, energybudget) "
                    f"(lepton_energybudget_limit_joules{ns}) / {J_PER_WH}",
                    "{{namespace}}/{{energybudget}} limit",
                ),
            ],
            "watth",
            (12, 0, 12, 8),
        ),
        _panel(
            "timeseries",
            "GPU energy by namespace",
            "GPU energy attributed to each namespace's pods in the range (watt-hours), "
            "measured by the exporter.",
            [
                (
                    f"sum by (namespace) ({pod_energy_range}) / {J_PER_WH}",
                    "{{namespace}}",
                )
            ],
            "watth",
            (0, 8, 12, 8),
        ),
        _panel(
            "timeseries",
            "GPU power by namespace",
            "Active GPU power attributed to each namespace's pods.",
            [(f"sum by (namespace) ({pod_power})", "{{namespace}}")],
            "watt",
            (12, 8, 12, 8),
        ),
        _panel(
            "table",
            "Energy per LeptonJob",
            "Lifetime energy of each LeptonJob as its budget charges it (watt-hours), "
            "by the LeptonJob's UID (the operator's books).",
            [
                (
                    "sort_desc(max by (namespace, leptonjob, job_uid) "
                    f"({job_energy})) / {J_PER_WH}",
                    "{{namespace}}/{{leptonjob}}",
                )
            ],
            "watth",
            (0, 16, 12, 9),
            instant=True,
        ),
        _panel(
            "timeseries",
            "GPU power per LeptonJob",
            "Power each LeptonJob is charged at (the rate of its books), by its UID.",
            [
                (
                    "sum by (namespace, leptonjob, job_uid) "
                    f"(deriv({job_energy}[$__rate_interval]))",
                    "{{namespace}}/{{leptonjob}}",
                )
            ],
            "watt",
            (12, 16, 12, 9),
        ),
    ]
    return _dashboard(
        "lepton-budgets",
        "Lepton / Energy budgets and jobs",
        "Each namespace's energy budget use against its limit, and the energy of each LeptonJob.",
        panels,
        [NAMESPACE],
    )


def gpus_by_model() -> dict[str, Any]:
    sel = '{gpu_model=~"$gpu_model"}'
    panels = [
        _panel(
            "timeseries",
            "GPU power by model",
            "Total board power of each GPU model.",
            [(f"sum by (gpu_model) (lepton_gpu_power_watts{sel})", "{{gpu_model}}")],
            "watt",
            (0, 0, 12, 9),
        ),
        _panel(
            "timeseries",
            "Mean power and power limit per GPU, by model",
            "Average draw of one GPU of each model beside the power limit in force.",
            [
                (f"avg by (gpu_model) (lepton_gpu_power_watts{sel})", "{{gpu_model}} power"),
                (
                    f"avg by (gpu_model) (lepton_gpu_power_limit_watts{sel})",
                    "{{gpu_model}} limit",
                ),
            ],
            "watt",
            (12, 0, 12, 9),
        ),
        _panel(
            "bargauge",
            "Power limit in force over the maximum",
            "How far Lepton's power caps hold each model below its highest power limit.",
            [
                (
                    f"avg by (gpu_model) (lepton_gpu_power_limit_watts{sel} / "
                    f"lepton_gpu_power_limit_max_watts{sel})",
                    "{{gpu_model}}",
                )
            ],
            "percentunit",
            (0, 9, 12, 8),
            defaults={"min": 0, "max": 1},
            displayMode="gradient",
            orientation="horizontal",
        ),
        _panel(
            "timeseries",
            "GPU utilisation by model",
            "Mean fraction of time a kernel ran, per model.",
            [(f"avg by (gpu_model) (lepton_gpu_utilization_ratio{sel})", "{{gpu_model}}")],
            "percentunit",
            (12, 9, 12, 8),
        ),
        _panel(
            "table",
            "Power limit range by model",
            "The lowest, default-or-highest and current power limits each model accepts.",
            [
                (f"min by (gpu_model) (lepton_gpu_power_limit_min_watts{sel})", "min"),
                (f"max by (gpu_model) (lepton_gpu_power_limit_max_watts{sel})", "max"),
                (f"count by (gpu_model) (lepton_gpu_up{sel})", "GPUs"),
            ],
            "watt",
            (0, 17, 24, 8),
            instant=True,
        ),
    ]
    return _dashboard(
        "lepton-gpus",
        "Lepton / GPU power and limits by model",
        "GPU power, power limits and utilisation per GPU model.",
        panels,
        [MODEL],
    )


def scheduler() -> dict[str, Any]:
    rate_bucket = "rate(lepton_scheduler_request_duration_seconds_bucket[$__rate_interval])"
    panels = [
        _panel(
            "timeseries",
            "Decisions by verb and outcome",
            "Lepton scheduler answers per second (scored, passthrough, no_fit, bad_request, "
            "invalid_hints, fail_open).",
            [
                (
                    "sum by (verb, outcome) "
                    "(rate(lepton_scheduler_decisions_total[$__rate_interval]))",
                    "{{verb}} {{outcome}}",
                )
            ],
            "reqps",
            (0, 0, 12, 9),
        ),
        _panel(
            "timeseries",
            "Latency by verb (p50, p99)",
            "Time to answer kube-scheduler; the goal is p99 <= 5 ms at 1,000 nodes.",
            [
                (
                    f"histogram_quantile(0.5, sum by (verb, le) ({rate_bucket}))",
                    "{{verb}} p50",
                ),
                (
                    f"histogram_quantile(0.99, sum by (verb, le) ({rate_bucket}))",
                    "{{verb}} p99",
                ),
            ],
            "s",
            (12, 0, 12, 9),
        ),
        _panel(
            "stat",
            "Degraded",
            "1 while the Lepton scheduler answers without its full inputs; pods are then placed "
            "fail-open.",
            [("max by (reason) (lepton_scheduler_degraded)", "{{reason}}")],
            "none",
            (0, 9, 8, 6),
        ),
        _panel(
            "stat",
            "Pods placed without the Lepton scheduler",
            "LeptonJob pods bound without a score from the Lepton scheduler in the range.",
            [
                (
                    "sum(increase(lepton_scheduler_pods_placed_unscored_total[$__range]))",
                    "pods",
                )
            ],
            "none",
            (8, 9, 8, 6),
        ),
        _panel(
            "timeseries",
            "Watch cache",
            "Objects in the Lepton scheduler's watch cache, by kind.",
            [("sum by (kind) (lepton_scheduler_cache_objects)", "{{kind}}")],
            "none",
            (16, 9, 8, 6),
        ),
    ]
    return _dashboard(
        "lepton-scheduler",
        "Lepton / Scheduler",
        "The Lepton scheduler's decisions and latency, and whether it runs with its full inputs.",
        panels,
        [],
    )


def exporter_health() -> dict[str, Any]:
    sel = '{node=~"$node"}'
    job = '{job=~".*lepton.*exporter.*"}'
    panels = [
        _panel(
            "stat",
            "Exporter targets up",
            "Scrape targets of the exporter that answered Prometheus' last scrape.",
            [(f"sum(up{job})", "up"), (f"count(up{job})", "targets")],
            "none",
            (0, 0, 8, 5),
        ),
        _panel(
            "stat",
            "Backends reading their meters",
            "Backends (nvml, rapl, model) whose last sample succeeded, over all backends.",
            [(f"sum(lepton_exporter_up{sel}) / count(lepton_exporter_up{sel})", "backends up")],
            "percentunit",
            (8, 0, 8, 5),
        ),
        _panel(
            "stat",
            "GPUs answering",
            "GPUs whose last sample succeeded, over all GPUs seen.",
            [(f"sum(lepton_gpu_up{sel}) / count(lepton_gpu_up{sel})", "GPUs up")],
            "percentunit",
            (16, 0, 8, 5),
        ),
        _panel(
            "timeseries",
            "Backend status by node",
            "1 when the backend read its meters on the last sample, 0 when it failed.",
            [(f"min by (node, source) (lepton_exporter_up{sel})", "{{node}} {{source}}")],
            "none",
            (0, 5, 12, 8),
        ),
        _panel(
            "timeseries",
            "Device errors",
            "Failed NVML, RAPL and kubelet calls per second (0 when there are none).",
            [
                (
                    "sum(rate(lepton_exporter_device_errors_total"
                    f"{sel}[$__rate_interval])) or vector(0)",
                    "errors",
                )
            ],
            "reqps",
            (12, 5, 12, 8),
        ),
        _panel(
            "timeseries",
            "Scrape duration",
            "How long Prometheus takes to scrape each exporter.",
            [(f"max by (instance) (scrape_duration_seconds{job})", "{{instance}}")],
            "s",
            (0, 13, 12, 8),
        ),
        _panel(
            "timeseries",
            "Series per scrape",
            "Samples each exporter serves per scrape (grows with GPUs and pods).",
            [(f"max by (instance) (scrape_samples_scraped{job})", "{{instance}}")],
            "none",
            (12, 13, 12, 8),
        ),
        _panel(
            "timeseries",
            "Pod GPU power by attribution method",
            "How pods' active GPU power was reckoned: exclusive, sm_utilization, "
            "process_memory, equal (no process data), mig_slice_size (a model), model.",
            [
                (
                    "sum by (attribution) (rate(lepton_pod_gpu_active_energy_joules_total"
                    f"{sel}[$__rate_interval]))",
                    "{{attribution}}",
                )
            ],
            "watt",
            (0, 21, 12, 8),
        ),
        _panel(
            "timeseries",
            "Unattributed GPU power by reason",
            "Active GPU power no pod could be charged for: no pod holds the GPU, a host "
            "process, an unresolved PID, a pod's process on a GPU it does not hold, a MIG "
            "slice with no pod.",
            [
                (
                    "sum by (reason) (rate(lepton_gpu_unattributed_energy_joules_total"
                    f"{sel}[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
            "watt",
            (12, 21, 12, 8),
        ),
    ]
    return _dashboard(
        "lepton-exporter",
        "Lepton / Exporter health",
        "Whether every exporter is scraped and reads its meters.",
        panels,
        [NODE],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard, by file name."""
    return {
        "lepton-cluster-energy.json": cluster_energy(),
        "lepton-budgets.json": budgets_and_jobs(),
        "lepton-gpus.json": gpus_by_model(),
        "lepton-scheduler.json": scheduler(),
        "lepton-exporter.json": exporter_health(),
    }


def expected_files() -> dict[Path, bytes]:
    """Every file this script owns, with the content it must have."""
    files: dict[Path, bytes] = {}
    for name, board in dashboards().items():
        content = (json.dumps(board, indent=2) + "\n").encode()
        files[DASHBOARDS_DIR / name] = content
        files[CHART_DIR / "dashboards" / name] = content
    for crd in sorted(CRDS_DIR.glob("*.yaml")):
        files[CHART_DIR / "crds" / crd.name] = crd.read_bytes()
    return files


def stale_files() -> list[Path]:
    """Files that differ from what the script would write, or that should not be there."""
    expected = expected_files()
    stale = [p for p, content in expected.items() if not p.exists() or p.read_bytes() != content]
    for folder, pattern in (
        (DASHBOARDS_DIR, "*.json"),
        (CHART_DIR / "dashboards", "*.json"),
        (CHART_DIR / "crds", "*.yaml"),
    ):
        stale.extend(p for p in sorted(folder.glob(pattern)) if p not in expected)
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a file is stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(REPO)}", file=sys.stderr)
        if stale:
            print("run `python scripts/deploy_assets.py` to regenerate them", file=sys.stderr)
        return 1 if stale else 0
    expected = expected_files()
    for path in stale_files():
        if path not in expected:
            path.unlink()
    for path, content in expected.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
