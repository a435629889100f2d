"""Watches the cluster's GPU nodes and GPU pods for the model backend and the power capper.

The model backend needs every GPU node's product and capacity and every
running pod that holds GPUs; the power capper needs the annotations of the
pods on its node. Both come from one list-then-watch per resource with the
official ``kubernetes`` client, kept in memory so that a sample never waits
for the API server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes import client, config, watch

from lepton_exporter.model import LABEL_GPU_PRODUCT, RESOURCE_GPU, FleetNode, FleetPod

log = logging.getLogger(__name__)

# Re-list after this long even when the watch is healthy, and wait this long
# after an error before trying again (the API server may be restarting).
WATCH_TIMEOUT_SECONDS = 300
RETRY_SECONDS = 1.0


def _quantity_int(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def node_from_object(node: Any) -> FleetNode | None:
    """A FleetNode from a V1Node, or None for a node without GPUs."""
    labels = node.metadata.labels or {}
    capacity = (node.status.capacity or {}) if node.status else {}
    count = _quantity_int(capacity.get(RESOURCE_GPU, 0))
    product = labels.get(LABEL_GPU_PRODUCT)
    if count <= 0 or not product:
        return None
    return FleetNode(node.metadata.name, product, count)


def pod_from_object(pod: Any) -> FleetPod | None:
    """A FleetPod from a V1Pod, or None unless it is bound, Running and requests GPUs."""
    if not pod.spec or not pod.spec.node_name or not pod.status or pod.status.phase != "Running":
        return None
    gpus = 0
    container_name = ""
    for container in pod.spec.containers or []:
        resources = container.resources
        wanted = 0
        if resources is not None:
            wanted = _quantity_int((resources.limits or {}).get(RESOURCE_GPU, 0)) or _quantity_int(
                (resources.requests or {}).get(RESOURCE_GPU, 0)
            )
        if wanted and not container_name:
            container_name = container.name
        gpus += wanted
    if gpus <= 0:
        return None
    return FleetPod(
        namespace=pod.metadata.namespace,
        name=pod.metadata.name,
        node=pod.spec.node_name,
        gpus=gpus,
        container=container_name,
        annotations=dict(pod.metadata.annotations or {}),
    )


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client from ``kubeconfig``, else the in-cluster service account."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()


class FleetWatcher:
    """Keeps the GPU nodes and GPU pods of the cluster (or of one node) up to date."""

    def __init__(self, api: client.ApiClient, node_name: str | None = None) -> None:
        self.core = client.CoreV1Api(api)
        self.node_name = node_name
        self._lock = threading.Lock()
        self._nodes: dict[str, FleetNode] = {}
        self._pods: dict[tuple[str, str], FleetPod] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.synced = threading.Event()
        self._synced_kinds: set[str] = set()

    def fleet(self) -> tuple[Sequence[FleetNode], Sequence[FleetPod]]:
        with self._lock:
            return list(self._nodes.values()), list(self._pods.values())

    def pods_on_node(self, node: str) -> list[FleetPod]:
        with self._lock:
            return [p for p in self._pods.values() if p.node == node]

    def start(self) -> None:
        node_selector = f"metadata.name={self.node_name}" if self.node_name else None
        pod_selector = f"spec.nodeName={self.node_name}" if self.node_name else None
        self._threads = [
            threading.Thread(
                target=self._run,
                args=("nodes", self.core.list_node, node_selector, self._apply_node),
                name="lepton-watch-nodes",
                daemon=True,
            ),
            threading.Thread(
                target=self._run,
                args=("pods", self.core.list_pod_for_all_namespaces, pod_selector, self._apply_pod),
                name="lepton-watch-pods",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _apply_node(self, kind: str, obj: Any) -> None:
        name = obj.metadata.name
        node = None if kind == "DELETED" else node_from_object(obj)
        with self._lock:
            if node is None:
                self._nodes.pop(name, None)
            else:
                self._nodes[name] = node

    def _apply_pod(self, kind: str, obj: Any) -> None:
        key = (obj.metadata.namespace, obj.metadata.name)
        pod = None if kind == "DELETED" else pod_from_object(obj)
        with self._lock:
            if pod is None:
                self._pods.pop(key, None)
            else:
                self._pods[key] = pod

    def _run(
        self,
        kind: str,
        lister: Callable[..., Any],
        field_selector: str | None,
        apply: Callable[[str, Any], None],
    ) -> None:
        kwargs: dict[str, Any] = {}
        if field_selector:
            kwargs["field_selector"] = field_selector
        while not self._stop.is_set():
            try:
                listing = lister(**kwargs)
                with self._lock:
                    if kind == "nodes":
                        self._nodes.clear()
                    else:
                        self._pods.clear()
                for item in listing.items:
                    apply("ADDED", item)
                self._synced_kinds.add(kind)
                if self._synced_kinds >= {"nodes", "pods"}:
                    self.synced.set()
                stream = watch.Watch().stream(
                    lister,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    **kwargs,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        apply(event["type"], event["object"])
            except Exception as error:  # the API server restarting, a 410 Gone: re-list
                log.info("watch %s restarting: %s", kind, error)
                time.sleep(RETRY_SECONDS)
