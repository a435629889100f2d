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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch

from lepton.core.names import LABEL_GPU_PRODUCT, RESOURCE_GPU
from lepton_exporter.model import FleetNode, FleetPod
from lepton_exporter.podresources.client import uuid_in_device_name
from lepton_exporter.readings import PodRef

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


@dataclass(frozen=True)
class PodIdentity:
    """What names a pod's processes: its UID and its containers' runtime ids."""

    uid: str
    namespace: str
    name: str
    # container id (without the "containerd://" or "cri-o://" scheme) -> container name
    containers: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    container_names: tuple[str, ...] = ()

    def container_ref(self, container_id: str) -> PodRef:
        """The container with ``container_id``; a pod with one container needs no id."""
        name = self.containers.get(container_id)
        if name is None and len(self.container_names) == 1:
            name = self.container_names[0]
        return PodRef(self.namespace, self.name, name or "")


def pod_identity_from_object(pod: Any) -> PodIdentity | None:
    """A PodIdentity from a V1Pod (any phase: a terminating pod's processes still run)."""
    if not pod.metadata or not pod.metadata.uid:
        return None
    ids: dict[str, str] = {}
    status = pod.status
    for container_status in [
        *((status.container_statuses or []) if status else []),
        *((status.init_container_statuses or []) if status else []),
    ]:
        container_id = container_status.container_id or ""
        if container_id:
            ids[container_id.split("://", 1)[-1]] = container_status.name
    names = tuple(c.name for c in (pod.spec.containers or [])) if pod.spec else ()
    return PodIdentity(pod.metadata.uid, pod.metadata.namespace, pod.metadata.name, ids, names)


class FleetWatcher:
    """Keeps the GPU nodes and GPU pods of the cluster (or of one node) up to date."""

    def __init__(
        self, api: client.ApiClient, node_name: str | None = None, index_pods: bool = False
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.node_name = node_name
        # Every pod by UID (not only GPU pods: a DRA claim holds GPUs without a request),
        # for the PID resolver; kept only when asked for.
        self.index_pods = index_pods
        self._identities: dict[str, PodIdentity] = {}
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

    def container_for(self, pod_uid: str, container_id: str) -> PodRef | None:
        """The container (pod UID, runtime container id) names, or None for an unknown pod."""
        with self._lock:
            identity = self._identities.get(pod_uid)
        return None if identity is None else identity.container_ref(container_id)

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
        identity = None
        if self.index_pods and kind != "DELETED":
            identity = pod_identity_from_object(obj)
        with self._lock:
            if pod is None:
                self._pods.pop(key, None)
            else:
                self._pods[key] = pod
            if self.index_pods:
                uid = obj.metadata.uid
                if identity is None:
                    self._identities.pop(uid, None)
                else:
                    self._identities[uid] = identity

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
                        self._identities.clear()
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


# resource.k8s.io versions to try, newest first (v1 from Kubernetes 1.34, v1beta2 1.33,
# v1beta1 1.32); the device attributes moved out of ``basic`` in v1beta2.
RESOURCE_API_VERSIONS = ("v1", "v1beta2", "v1beta1")
DRA_RELIST_SECONDS = 60.0


def dra_device_uuids(slices: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], str]:
    """(driver, pool, device) -> UUID, from ResourceSlice objects (as the API's JSON).

    The NVIDIA DRA driver publishes each GPU and MIG device with a ``uuid`` attribute
    (``GPU-…`` or ``MIG-…``); an attribute may carry its driver's domain
    (``gpu.nvidia.com/uuid``).
    """
    uuids: dict[tuple[str, str, str], str] = {}
    for resource_slice in slices:
        spec = resource_slice.get("spec") or {}
        driver = str(spec.get("driver", ""))
        pool = str((spec.get("pool") or {}).get("name", ""))
        for device in spec.get("devices") or []:
            attributes = device.get("attributes") or (device.get("basic") or {}).get(
                "attributes", {}
            )
            for key in ("uuid", f"{driver}/uuid"):
                value = (attributes.get(key) or {}).get("string")
                if value:
                    uuids[(driver, pool, str(device.get("name", "")))] = str(value)
                    break
    return uuids


class ResourceSliceIndex:
    """The DRA devices of one node by UUID, re-listed every minute from the API server.

    ResourceSlices change only when a driver (re)publishes its devices, so a periodic
    list is enough; a claimed device not yet in the index falls back to a UUID-shaped
    device name.
    """

    def __init__(self, api: client.ApiClient, node_name: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.node_name = node_name
        self._uuids: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        for version in RESOURCE_API_VERSIONS:
            try:
                listing = self.custom.list_cluster_custom_object(
                    "resource.k8s.io",
                    version,
                    "resourceslices",
                    field_selector=f"spec.nodeName={self.node_name}",
                )
            except Exception as error:  # an API server without this version (404): older one
                log.debug("resourceslices %s: %s", version, error)
                continue
            uuids = dra_device_uuids(listing.get("items", []))
            with self._lock:
                self._uuids = uuids
            return

    def uuid(self, driver: str, pool: str, device: str) -> str | None:
        with self._lock:
            found = self._uuids.get((driver, pool, device))
        return found if found is not None else uuid_in_device_name(driver, pool, device)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.refresh()
                self._stop.wait(DRA_RELIST_SECONDS)

        self._thread = threading.Thread(target=loop, name="lepton-resourceslices", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
