"""The Lepton scheduler's own view of the cluster: Nodes, Pods and EnergyBudgets.

With ``nodeCacheCapable: true`` kube-scheduler sends only node names, and it
never sends the pods running on a node, so the Lepton scheduler keeps a cache fed by
watches (:mod:`lepton_scheduler.watch`) or, in tests and benchmarks, directly.

The cache keeps only what scoring needs, in small slotted objects (50,000 pods
must fit comfortably), and keeps per-node aggregates (GPUs in use, pods that
keep the node awake) up to date on every event, so that answering a request
is a dictionary lookup per candidate node and a few array gathers.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from lepton.core.hints import owner_name, workload_name
from lepton.core.names import (
    LABEL_BUDGET_NAME,
    LABEL_GPU_PRODUCT,
    LABEL_GPU_REPLICAS,
    LABEL_HOST_IDLE_WATTS,
    LABEL_LEPTON_GPU_MODEL,
    RESOURCE_GPU,
)
from lepton.core.scoring import CandidateNode, CandidateTable

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(slots=True)
class NodeInfo:
    """What the scorer needs from a v1.Node."""

    name: str
    gpu_model: str
    allocatable_gpus: int
    labels: dict[str, str]
    host_idle_watts: float = math.nan  # from lepton.dev/host-idle-watts; NaN: the default
    # Physical GPUs (what idles): allocatable over nvidia.com/gpu.replicas on a time-sliced
    # node, else the allocatable count. -1: the allocatable count.
    physical_gpus: int = -1

    # The share of a board one advertised GPU is: 1/replicas on a time-sliced node.
    gpu_share: float = 1.0

    @property
    def boards(self) -> int:
        return self.allocatable_gpus if self.physical_gpus < 0 else self.physical_gpus


@dataclass(slots=True)
class PodInfo:
    """What the scorer needs from a v1.Pod."""

    namespace: str
    name: str
    uid: str
    node_name: str
    job_name: str
    budget_name: str
    gpus: int
    active: bool  # not Succeeded/Failed and not being deleted with its node gone
    daemon: bool  # owned by a DaemonSet: does not keep a node awake

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        try:
            return int(float(str(value)))
        except (TypeError, ValueError):
            return 0


def node_info(obj: Mapping[str, Any]) -> NodeInfo:
    """A NodeInfo from a v1.Node as JSON."""
    metadata = obj.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    allocatable = (obj.get("status") or {}).get("allocatable") or {}
    model = labels.get(LABEL_GPU_PRODUCT) or labels.get(LABEL_LEPTON_GPU_MODEL) or ""
    try:
        host_idle = float(labels.get(LABEL_HOST_IDLE_WATTS, "nan"))
    except ValueError:
        host_idle = math.nan  # an unreadable label falls back to the sourced default
    gpus = _quantity(allocatable.get(RESOURCE_GPU, 0))
    replicas = _quantity(labels.get(LABEL_GPU_REPLICAS, 1))
    return NodeInfo(
        name=str(metadata.get("name", "")),
        gpu_model=model,
        allocatable_gpus=gpus,
        labels=labels,
        host_idle_watts=host_idle if math.isfinite(host_idle) and host_idle >= 0 else math.nan,
        # time-sliced: each board is advertised `replicas` times, but idles once
        physical_gpus=-(-gpus // replicas) if replicas > 1 else -1,
        gpu_share=1.0 / replicas if replicas > 1 else 1.0,
    )


def pod_gpus(spec: Mapping[str, Any]) -> int:
    """GPUs a pod holds: the sum over containers, or the largest init container's."""

    def gpus(container: Mapping[str, Any]) -> int:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        return _quantity(limits.get(RESOURCE_GPU, requests.get(RESOURCE_GPU, 0)))

    main = sum(gpus(c) for c in spec.get("containers") or ())
    init = max((gpus(c) for c in spec.get("initContainers") or ()), default=0)
    return max(main, init)


def pod_info(obj: Mapping[str, Any]) -> PodInfo:
    """A PodInfo from a v1.Pod as JSON."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    labels = metadata.get("labels") or {}
    phase = (obj.get("status") or {}).get("phase") or "Pending"
    owners = metadata.get("ownerReferences") or ()
    return PodInfo(
        namespace=str(metadata.get("namespace") or "default"),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        node_name=str(spec.get("nodeName") or ""),
        job_name=workload_name(labels, metadata.get("annotations"), owner_name(metadata)) or "",
        budget_name=str(labels.get(LABEL_BUDGET_NAME) or ""),
        gpus=pod_gpus(spec),
        active=phase not in TERMINAL_PHASES,
        daemon=any(o.get("kind") == "DaemonSet" for o in owners if isinstance(o, Mapping)),
    )


def budget_pressure_of(obj: Mapping[str, Any]) -> float | None:
    """0..1 from an EnergyBudget's spec.limitWattHours and status.remainingWattHours."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    try:
        limit = float(spec.get("limitWattHours", 0))
    except (TypeError, ValueError):
        return None
    if "remainingWattHours" not in status:
        return None
    if limit <= 0:
        return 1.0
    remaining = float(status.get("remainingWattHours") or 0.0)
    return min(1.0, max(0.0, (limit - remaining) / limit))


Ints = np.ndarray[Any, np.dtype[np.int64]]


class ClusterCache:
    """Nodes, pods and budget pressure, with per-node aggregates; safe across threads.

    Per-node numbers live in numpy columns indexed by a stable row per node, so
    that a request's candidates are one fancy-indexing away from a
    :class:`~lepton.core.scoring.CandidateTable`.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, PodInfo] = {}
        self._gpus_used: dict[str, int] = defaultdict(int)
        self._awake: dict[str, int] = defaultdict(int)  # pods keeping each node awake
        self._job_pods: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.budgets: dict[tuple[str, str], float] = {}
        self.forecasts: dict[str, float] = {}
        self.synced: set[str] = set()
        # Bumped on every change that can alter an answer (a pod's status-only update does not).
        self.generation = 0
        # columns, one row per node ever seen since the last full node list
        self._clear_rows()

    # ------------------------------------------------------------------ columns

    def _grow(self, size: int) -> None:
        if size <= len(self._model_col):
            return
        new = max(size, 2 * len(self._model_col), 64)
        for attr in (
            "_model_col",
            "_alloc_col",
            "_boards_col",
            "_share_col",
            "_used_col",
            "_awake_col",
            "_forecast_col",
            "_host_idle_col",
        ):
            old = getattr(self, attr)
            col = np.zeros(new, dtype=old.dtype)
            col[: len(old)] = old
            setattr(self, attr, col)

    def _set_row(self, info: NodeInfo) -> None:
        row = self._row.get(info.name)
        if row is None:
            row = len(self._names)
            self._grow(row + 1)
            self._row[info.name] = row
            self._names.append(info.name)
            self._labels.append(info.labels)
        self._labels[row] = info.labels
        for key, (values, ids, col) in list(self._domain_cols.items()):
            value = info.labels.get(key)
            if value is not None and value not in ids:
                ids[value] = len(values)
                values.append(value)
            if row >= len(col):
                grown = np.full(max(row + 1, 2 * len(col), 64), -1, dtype=np.int64)
                grown[: len(col)] = col
                self._domain_cols[key] = (values, ids, grown)
                col = grown
            col[row] = -1 if value is None else ids[value]
        model = self._model_ids.setdefault(info.gpu_model, len(self._models))
        if model == len(self._models):
            self._models.append(info.gpu_model)
        self._model_col[row] = model
        self._alloc_col[row] = info.allocatable_gpus
        self._boards_col[row] = info.boards
        self._share_col[row] = info.gpu_share
        self._used_col[row] = self._gpus_used.get(info.name, 0)
        self._awake_col[row] = self._awake.get(info.name, 0)
        self._forecast_col[row] = self.forecasts.get(info.name, 0.0)
        self._host_idle_col[row] = info.host_idle_watts

    def _clear_rows(self) -> None:
        """No rows: the table's columns empty (the start, and the first step of a rebuild)."""
        self._row: dict[str, int] = {}
        self._names: list[str] = []
        self._labels: list[Mapping[str, str]] = []
        self._models: list[str] = []
        self._model_ids: dict[str, int] = {}
        self._model_col = np.zeros(0, dtype=np.int64)
        self._alloc_col = np.zeros(0, dtype=np.int64)
        self._boards_col = np.zeros(0, dtype=np.int64)
        self._share_col = np.zeros(0, dtype=np.float64)
        self._used_col = np.zeros(0, dtype=np.int64)
        self._awake_col = np.zeros(0, dtype=np.int64)
        self._forecast_col = np.zeros(0, dtype=np.float64)
        self._host_idle_col = np.zeros(0, dtype=np.float64)
        # topology key -> (distinct values, value -> id, per-row id or -1), built on first use
        self._domain_cols: dict[str, tuple[list[str], dict[str, int], Ints]] = {}

    def _rebuild_rows(self) -> None:
        self._clear_rows()
        for info in self.nodes.values():
            self._set_row(info)

    def _pod_moved(self, node: str, gpus: int, awake: int) -> None:
        self._gpus_used[node] += gpus
        self._awake[node] += awake
        row = self._row.get(node)
        if row is not None:
            self._used_col[row] += gpus
            self._awake_col[row] += awake

    # ------------------------------------------------------------------ nodes

    def upsert_node(self, obj: Mapping[str, Any]) -> None:
        info = node_info(obj)
        with self._lock:
            self.generation += 1
            self.nodes[info.name] = info
            self._set_row(info)

    def delete_node(self, obj: Mapping[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        with self._lock:
            self.generation += 1
            if self.nodes.pop(name, None) is not None:
                self._rebuild_rows()

    def replace_nodes(self, items: Iterable[Mapping[str, Any]]) -> None:
        infos = [node_info(o) for o in items]
        with self._lock:
            self.generation += 1
            self.nodes = {i.name: i for i in infos}
            self._rebuild_rows()
            self.synced.add("nodes")

    # ------------------------------------------------------------------ pods

    def _add(self, info: PodInfo) -> None:
        self.pods[info.key] = info
        if info.job_name:
            self._job_pods[(info.namespace, info.job_name)].add(info.key)
        if info.node_name and info.active:
            self._pod_moved(info.node_name, info.gpus, 0 if info.daemon else 1)

    def _remove(self, key: str) -> None:
        info = self.pods.pop(key, None)
        if info is None:
            return
        if info.job_name:
            members = self._job_pods.get((info.namespace, info.job_name))
            if members is not None:
                members.discard(key)
                if not members:
                    del self._job_pods[(info.namespace, info.job_name)]
        if info.node_name and info.active:
            self._pod_moved(info.node_name, -info.gpus, 0 if info.daemon else -1)

    def upsert_pod(self, obj: Mapping[str, Any]) -> PodInfo:
        info = pod_info(obj)
        with self._lock:
            if self.pods.get(info.key) == info:  # a status update scoring does not see
                return info
            self.generation += 1
            self._remove(info.key)
            self._add(info)
        return info

    def delete_pod(self, obj: Mapping[str, Any]) -> None:
        info = pod_info(obj)
        with self._lock:
            self.generation += 1
            self._remove(info.key)

    def replace_pods(self, items: Iterable[Mapping[str, Any]]) -> None:
        infos = [pod_info(o) for o in items]
        with self._lock:
            self.generation += 1
            self.pods = {}
            self._gpus_used.clear()
            self._awake.clear()
            self._job_pods.clear()
            self._used_col[:] = 0
            self._awake_col[:] = 0
            for info in infos:
                self._add(info)
            self.synced.add("pods")

    def add_pod_infos(self, infos: Iterable[PodInfo]) -> None:
        """Bulk insert of ready-made PodInfos (benchmarks, simulators)."""
        with self._lock:
            self.generation += 1
            for info in infos:
                self._remove(info.key)
                self._add(info)

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        return self.pods.get(f"{namespace}/{name}")

    # ------------------------------------------------------------------ budgets

    def upsert_budget(self, obj: Mapping[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        key = (str(metadata.get("namespace") or "default"), str(metadata.get("name") or ""))
        pressure = budget_pressure_of(obj)
        with self._lock:
            self.generation += 1
            if pressure is None:
                self.budgets.pop(key, None)
            else:
                self.budgets[key] = pressure

    def delete_budget(self, obj: Mapping[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        key = (str(metadata.get("namespace") or "default"), str(metadata.get("name") or ""))
        with self._lock:
            self.generation += 1
            self.budgets.pop(key, None)

    def replace_budgets(self, items: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            self.budgets.clear()
            for obj in items:
                self.upsert_budget(obj)
            self.synced.add("energybudgets")

    def budget_pressure(self, namespace: str, budget_name: str) -> float | None:
        return self.budgets.get((namespace, budget_name))

    # ------------------------------------------------------------------ forecasts

    def set_forecasts(self, forecasts: Mapping[str, float]) -> None:
        with self._lock:
            self.generation += 1
            self.forecasts = dict(forecasts)
            for name, row in self._row.items():
                self._forecast_col[row] = self.forecasts.get(name, 0.0)

    # ------------------------------------------------------------------ queries

    def _domain_col(self, key: str) -> tuple[list[str], dict[str, int], Ints]:
        col = self._domain_cols.get(key)
        if col is None:
            values: list[str] = []
            ids: dict[str, int] = {}
            rows = []
            for labels in self._labels:
                value = labels.get(key)
                if value is not None and value not in ids:
                    ids[value] = len(values)
                    values.append(value)
                rows.append(-1 if value is None else ids[value])
            col = self._domain_cols[key] = (values, ids, np.array(rows, dtype=np.int64))
        return col

    def table(
        self, names: Sequence[str], domain_keys: Iterable[str] = ()
    ) -> tuple[CandidateTable, list[str]]:
        """The scorer's view of the named nodes, in order, and the names it does not know.

        ``domain_keys`` (a job's ``spreadAcross``) come precomputed as domain ids.
        """
        with self._lock:
            rows_or_none = list(map(self._row.get, names))
            unknown: list[str] = []
            if None in rows_or_none:  # rare: a node the watch has not delivered yet
                unknown = [n for n, r in zip(names, rows_or_none, strict=True) if r is None]
                row_list = [r for r in rows_or_none if r is not None]
            else:
                row_list = cast(list[int], rows_or_none)
            rows = np.array(row_list, dtype=np.int64)
            alloc = self._alloc_col[rows]
            table = CandidateTable(
                names=list(names) if not unknown else [self._names[r] for r in row_list],
                models=list(self._models),
                model_index=self._model_col[rows],
                free_gpus=np.maximum(0, alloc - self._used_col[rows]),
                # what idles: the node's boards (a time-sliced node advertises more)
                total_gpus=self._boards_col[rows],
                gpu_shares=self._share_col[rows],
                empty=self._awake_col[rows] <= 0,
                predicted_utilization=self._forecast_col[rows],
                # gathered now: filter_nodes takes the passed rows, reading every label
                labels=list(map(self._labels.__getitem__, row_list)),
                host_idle_watts=self._host_idle_col[rows],
                domains={
                    key: (list(values), col[rows])
                    for key in domain_keys
                    for values, _, col in [self._domain_col(key)]
                },
            )
        return table, unknown

    def candidate(self, name: str) -> CandidateNode | None:
        """The scorer's view of one node, or None when the cache does not know it."""
        table, unknown = self.table([name])
        return None if unknown else table[0]

    def placed_pods(self, namespace: str, job_name: str, exclude_uid: str = "") -> dict[str, str]:
        """UID -> node of the job's other active pods on a node (replicas and spares alike)."""
        with self._lock:
            out = {}
            for key in self._job_pods.get((namespace, job_name), ()):
                info = self.pods[key]
                if info.active and info.node_name and info.uid != exclude_uid:
                    out[info.uid or key] = info.node_name
            return out

    def job_pods(self, namespace: str, job_name: str) -> list[PodInfo]:
        with self._lock:
            return [self.pods[k] for k in self._job_pods.get((namespace, job_name), ())]

    def node_labels(self, names: Iterable[str]) -> dict[str, Mapping[str, str]]:
        return {n: self.nodes[n].labels for n in names if n in self.nodes}

    def stats(self) -> dict[str, int]:
        return {"nodes": len(self.nodes), "pods": len(self.pods), "budgets": len(self.budgets)}
