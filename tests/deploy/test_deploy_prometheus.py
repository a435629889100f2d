"""Every dashboard query returns data from a real Prometheus.

Prometheus (the Debian package) scrapes the real exporter, the real Lepton scheduler and the real
operator (`lepton operator`, which serves its budgets' gauges), all running against the
local control plane: the exporter's model backend estimates the kwok
fleet's GPUs and charges a GPU pod running there; its RAPL backend reads a fake sysfs
(this machine has no RAPL), so the CPU panels have a counter to show. The Lepton scheduler
answers a few filter/prioritize calls so its latency histogram has samples. Each panel's
query, with Grafana's variables filled in, must then return at least one series.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lepton_exporter.main import build_exporter

from lepton.cluster.local import LocalCluster
from lepton.cluster.processes import free_port
from lepton.cluster.stack import LeptonStack
from tests.support import builders, wait_for
from tests.support.dashboards import DASHBOARD_FILES, fill_variables, load, queries
from tests.support.exporter import serving

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCRAPE_INTERVAL_SECONDS = 1


def http_json(url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def gpu_pod(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    """A LeptonJob-like pod holding one GPU on the fleet (kwok keeps it Running)."""
    namespace, name = "dash-team", "dash-train-x7k2p"
    cluster.create_namespace(namespace)
    builders.apply(cluster, namespace, builders.gpu_pod(name, image="trainer"))
    wait_for(
        lambda: (
            cluster.kubectl(
                "get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}"
            ).stdout
            == "Running"
        ),
        60,
        "the GPU pod to run",
        ignoring=(OSError,),
    )
    try:
        yield namespace, name
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def exporter_target(
    cluster: LocalCluster, gpu_pod: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    sysfs = tmp_path_factory.mktemp("sys")
    zone = sysfs / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    exporter, stoppers = build_exporter(
        "model,rapl", None, str(cluster.kubeconfig), str(sysfs), None, False
    )
    energy_uj = [1000]

    def package_draws() -> None:
        energy_uj[0] += 40_000_000  # 40 J per half second: an 80 W CPU package
        (zone / "energy_uj").write_text(f"{energy_uj[0]}\n")

    try:
        with serving(exporter, package_draws) as url:
            yield url
    finally:
        for stopper in stoppers:
            stopper()


@pytest.fixture(scope="module")
def scheduler_target(cluster: LocalCluster) -> Iterator[str]:
    port = free_port()
    code = (
        "from lepton_scheduler.app import run; "
        f"run('127.0.0.1', {port}, {str(cluster.kubeconfig)!r}, None)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200,
            60,
            "the Lepton scheduler to sync its caches",
            ignoring=(OSError,),
        )
        nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        names = [n["metadata"]["name"] for n in nodes]
        pod = {
            "metadata": {"name": "probe", "namespace": "default", "uid": "probe-uid"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }
        stop = threading.Event()

        def trickle() -> None:
            # kube-scheduler's calls, steadily, so that rate() over the histogram is not 0/0.
            while not stop.is_set():
                http_json(f"{url}/filter", {"Pod": pod, "NodeNames": names})
                http_json(f"{url}/prioritize", {"Pod": pod, "NodeNames": names})
                stop.wait(0.2)

        caller = threading.Thread(target=trickle, daemon=True)
        caller.start()
        yield f"127.0.0.1:{port}"
        stop.set()
        caller.join(timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def operator_target(cluster: LocalCluster, gpu_pod: tuple[str, str]) -> Iterator[str]:
    """`lepton operator` watching the GPU pod's namespace, with a budget to report."""
    namespace, _ = gpu_pod
    LeptonStack(cluster).install_crds()
    builders.apply(
        cluster,
        namespace,
        builders.energy_budget(500, "dash-budget"),
        builders.lepton_job("dash-train", "dash-budget", 60),
        # And one whose name extends the first's: the books keep the two apart (by UID).
        builders.lepton_job("dash-train-2", "dash-budget", 60),
    )
    port, liveness_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lepton.cli",
            "operator",
            f"--kubeconfig={cluster.kubeconfig}",
            f"--namespace={namespace}",
            "--metrics-host=127.0.0.1",
            f"--metrics-port={port}",
            f"--liveness=http://127.0.0.1:{liveness_port}/healthz",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # kopf's liveness endpoint answers once the operator runs (the chart probes it).
        wait_for(
            lambda: (
                urllib.request.urlopen(
                    f"http://127.0.0.1:{liveness_port}/healthz", timeout=2
                ).status
                == 200
            ),
            60,
            "the operator's liveness endpoint",
            ignoring=(OSError,),
        )

        def budget_reported() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
            return (
                'lepton_energybudget_limit_joules{energybudget="dash-budget"' in text
                and 'leptonjob="dash-train-2"' in text
            )

        wait_for(budget_reported, 60, "the operator to report the budget", ignoring=(OSError,))
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture(scope="module")
def prometheus(
    exporter_target: str,
    scheduler_target: str,
    operator_target: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
        },
        "scrape_configs": [
            {"job_name": "lepton-exporter", "static_configs": [{"targets": [exporter_target]}]},
            {
                "job_name": "lepton-scheduler-server",
                "static_configs": [{"targets": [scheduler_target]}],
            },
            {"job_name": "lepton-operator", "static_configs": [{"targets": [operator_target]}]},
        ],
    }
    (folder / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    log = (folder / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={folder / 'data'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Both targets up, and enough scrapes for rate() and increase() (two samples at least).
        def scraped() -> bool:
            result = instant(url, "count_over_time(up[1m]) >= 6 and up == 1")
            return len(result) == 3

        wait_for(
            scraped,
            60,
            "Prometheus to scrape the exporter, the Lepton scheduler and the operator",
            ignoring=(OSError,),
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def instant(url: str, expr: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr})
    body = http_json(f"{url}/api/v1/query?{query}")
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def panel_queries() -> list[tuple[str, str, str]]:
    found = []
    for path in DASHBOARD_FILES:
        board = load(path)
        for title, expr in queries(board):
            found.append((path.stem, title, fill_variables(expr, board)))
    return found


PANEL_QUERIES = panel_queries()


@pytest.mark.parametrize(
    ("dashboard", "title", "expr"), PANEL_QUERIES, ids=[f"{d}:{t}" for d, t, _ in PANEL_QUERIES]
)
def test_panel_query_returns_data(prometheus: str, dashboard: str, title: str, expr: str) -> None:
    result = instant(prometheus, expr)
    assert result, f"{dashboard}: panel {title!r} returned no data:\n{expr}"
    values = [float(r["value"][1]) for r in result]
    assert all(v == v for v in values), f"{title!r} returned NaN: {result}"


def test_energy_per_leptonjob_is_keyed_by_the_lepton_jobs_uid(
    prometheus: str, cluster: LocalCluster, gpu_pod: tuple[str, str]
) -> None:
    namespace, _ = gpu_pod
    expr = next(e for _, t, e in PANEL_QUERIES if t == "Energy per LeptonJob")
    jobs = {
        (r["metric"]["namespace"], r["metric"]["leptonjob"], r["metric"]["job_uid"])
        for r in instant(prometheus, expr)
    }
    uids = {
        j["metadata"]["name"]: j["metadata"]["uid"]
        for j in json.loads(
            cluster.kubectl("get", "leptonjobs", "-n", namespace, "-o", "json").stdout
        )["items"]
    }
    assert {(namespace, n, u) for n, u in uids.items()} <= jobs, jobs


def test_budget_gauges_match_the_budgets_status(
    prometheus: str, cluster: LocalCluster, gpu_pod: tuple[str, str]
) -> None:
    namespace, _ = gpu_pod
    limit = instant(prometheus, f'lepton_energybudget_limit_joules{{namespace="{namespace}"}}')
    assert float(limit[0]["value"][1]) == 500 * 3600.0
    status = json.loads(
        cluster.kubectl("get", "eb", "dash-budget", "-n", namespace, "-o", "json").stdout
    )["status"]
    remaining = instant(
        prometheus, f'lepton_energybudget_remaining_joules{{namespace="{namespace}"}}'
    )
    assert float(remaining[0]["value"][1]) == float(status["remainingWattHours"]) * 3600.0
