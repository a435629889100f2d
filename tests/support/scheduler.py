"""Helpers for the Lepton scheduler's tests: a loopback server, a fleet, pods as kube-scheduler
sends them."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from aiohttp import web
from lepton_scheduler.app import Scheduler
from lepton_scheduler.cache import ClusterCache

from lepton.cluster.fleet import DEFAULT_FLEET
from lepton.cluster.local import LocalCluster
from lepton.cluster.processes import free_port
from lepton.core.hints import JobHints, hints_to_annotations
from tests.support import wait_for

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ZONE = "topology.kubernetes.io/zone"


@dataclass
class Server:
    url: str
    scheduler: Scheduler
    cache: ClusterCache
    session: requests.Session

    def post(self, verb: str, payload: Any, **kw: Any) -> requests.Response:
        return self.session.post(f"{self.url}/{verb}", json=payload, timeout=10, **kw)

    def post_raw(self, verb: str, data: bytes, **kw: Any) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        return self.session.post(f"{self.url}/{verb}", data=data, headers=headers, timeout=30, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(f"{self.url}{path}", timeout=10, **kw)


def serve(app: web.Application, port: int | None = None) -> tuple[str, Callable[[], None]]:
    """Run ``app`` on a loopback port in a thread of its own; returns (url, stop)."""
    port = port or free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(10), "scheduler did not start"

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def node_json(name: str, product: str, gpus: int, zone: str) -> dict[str, Any]:
    """A v1.Node as the API serves it (what the watch delivers)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "101",
            "labels": {
                "kubernetes.io/hostname": name,
                ZONE: zone,
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.count": str(gpus),
            },
        },
        "spec": {},
        "status": {
            "capacity": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": str(gpus)},
            "allocatable": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": str(gpus)},
        },
    }


FLEET = [
    ("a40-0", "NVIDIA-A40", 4, "zone-a"),
    ("a40-1", "NVIDIA-A40", 4, "zone-b"),
    ("h100-0", "NVIDIA-H100-80GB-HBM3", 8, "zone-a"),
    ("h100-1", "NVIDIA-H100-80GB-HBM3", 8, "zone-b"),
    ("t4-0", "Tesla-T4", 4, "zone-c"),
    ("l4-0", "NVIDIA-L4", 4, "zone-c"),
]


def fleet_cache(fleet: list[tuple[str, str, int, str]] = FLEET) -> ClusterCache:
    cache = ClusterCache()
    cache.replace_nodes([node_json(*n) for n in fleet])
    cache.replace_pods([])
    return cache


# A pod exactly as kube-scheduler serialises it into ExtenderArgs.Pod (a v1.Pod, camelCase
# inside; managedFields and status conditions included, as the scheduler's informer has them).
POD_TEMPLATE: dict[str, Any] = {
    "metadata": {
        "name": "train-abc12",
        "generateName": "train-",
        "namespace": "ml",
        "uid": "5f6b1e0c-3b1a-4d7e-9a55-0c7a8f2e1d34",
        "resourceVersion": "48213",
        "creationTimestamp": "2026-03-02T09:59:58Z",
        "labels": {
            "batch.kubernetes.io/controller-uid": "0d6f8c1e-91a5-4a34-b1a4-2a2f1f0e7b11",
            "batch.kubernetes.io/job-name": "train",
            "job-name": "train",
            "lepton.dev/job-name": "train",
            "lepton.dev/job-uid": "c1d2e3f4-0000-4000-8000-000000000001",
        },
        "annotations": {},
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": "train",
                "uid": "0d6f8c1e-91a5-4a34-b1a4-2a2f1f0e7b11",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
        "managedFields": [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-03-02T09:59:58Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {}}},
            }
        ],
    },
    "spec": {
        "containers": [
            {
                "name": "train",
                "image": "busybox",
                "resources": {
                    "limits": {"nvidia.com/gpu": "1"},
                    "requests": {"nvidia.com/gpu": "1"},
                },
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "Always",
            }
        ],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "securityContext": {},
        "schedulerName": "lepton-scheduler",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        ],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    },
    "status": {"phase": "Pending", "qosClass": "BestEffort"},
}


def lepton_pod(
    hints: JobHints | None = None, name: str = "train-abc12", uid: str | None = None
) -> dict[str, Any]:
    pod = copy.deepcopy(POD_TEMPLATE)
    pod["metadata"]["name"] = name
    pod["metadata"]["uid"] = uid or f"uid-{name}"
    if hints is None:
        hints = JobHints(job_name="train")
    pod["metadata"]["labels"]["lepton.dev/job-name"] = hints.job_name
    pod["metadata"]["annotations"] = hints_to_annotations(hints)
    return pod


def plain_pod(name: str = "web-1") -> dict[str, Any]:
    pod = copy.deepcopy(POD_TEMPLATE)
    pod["metadata"]["name"] = name
    pod["metadata"]["labels"] = {"app": "web"}
    pod["spec"]["schedulerName"] = "lepton-scheduler"
    return pod


def extender_args(pod: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """ExtenderArgs as kube-scheduler marshals it with nodeCacheCapable: true."""
    return {"Pod": pod, "Nodes": None, "NodeNames": names}


def keep_awake(cache: ClusterCache, *nodes: str) -> None:
    """A running CPU-only pod on each node, so that placing there wakes nothing."""
    for node in nodes:
        pod = plain_pod(name=f"awake-{node}")
        pod["spec"]["nodeName"] = node
        pod["spec"]["containers"][0]["resources"] = {}
        pod["status"]["phase"] = "Running"
        cache.upsert_pod(pod)


# --------------------------------------------------------------------------- end-to-end

FLEET_NODES = [n["metadata"]["name"] for n in DEFAULT_FLEET.nodes()]


def placed(
    cluster: LocalCluster, namespace: str, names: list[str], timeout: float = 60
) -> dict[str, str]:
    """pod -> node once every pod is bound."""
    result: dict[str, str] = {}

    def bound() -> bool:
        items = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
        for pod in items["items"]:
            node = pod["spec"].get("nodeName")
            if pod["metadata"]["name"] in names and node:
                result[pod["metadata"]["name"]] = node
        return all(n in result for n in names)

    wait_for(bound, timeout, f"pods {names} to be scheduled")
    return result


# --------------------------------------------------------------------------- Prometheus

HISTORY_HOURS = 6
_GPU = 'node="{node}",gpu_uuid="{gpu}",gpu_model="NVIDIA-A40",source="nvml"'


def workload_openmetrics(
    now: int, namespace: str, workloads: Mapping[str, float], hours: int = HISTORY_HOURS
) -> str:
    """The exporter's GPU utilisation and pod energy, a sample a minute for ``hours``.

    Each workload (an owner's name, its mean utilisation) has two pods
    (``OWNER-x0``, ``OWNER-x1``), each on a GPU of its own on node ``hist-a40-W``.
    """
    utilization = ["# TYPE lepton_gpu_utilization_ratio gauge"]
    energy = ["# TYPE lepton_pod_gpu_idle_energy_joules counter"]
    for w, (owner, level) in enumerate(workloads.items()):
        for replica in range(2):
            labels = _GPU.format(node=f"hist-a40-{w}", gpu=f"GPU-{w}{replica}")
            pod = f'{labels},namespace="{namespace}",pod="{owner}-x{replica}",container="server"'
            for k, t in enumerate(range(now - hours * 3600, now, 60)):
                busy = level + 0.1 * math.sin(k / 9 + replica) + 0.05 * math.sin(k / 2.3)
                utilization.append(f"lepton_gpu_utilization_ratio{{{labels}}} {busy:.4f} {t}")
                energy.append(f"lepton_pod_gpu_idle_energy_joules_total{{{pod}}} {k} {t}")
    return "\n".join([*utilization, *energy, "# EOF"]) + "\n"


@contextlib.contextmanager
def backfilled_prometheus(directory: Path, openmetrics: str) -> Iterator[str]:
    """A real Prometheus over a TSDB that ``promtool`` backfilled with ``openmetrics``."""
    promtool, binary = shutil.which("promtool"), shutil.which("prometheus")
    assert promtool and binary, "install Prometheus: apt-get install -y prometheus"
    source = directory / "history.om"
    source.write_text(openmetrics)
    tsdb = directory / "tsdb"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
        check=True,
        capture_output=True,
    )
    config = directory / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tsdb}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(ready, 30, "Prometheus to become ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
