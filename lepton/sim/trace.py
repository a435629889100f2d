"""The Alibaba GPU trace as plain records: pods to replay and nodes to replay them on.

The simulator reads the trace's CSV files (``openb_pod_list_*.csv``,
``openb_node_list_*.csv``, see ``lepton/data/README.md``) into small frozen
records and nothing else: how a record becomes work, energy or a placement is
decided elsewhere (:mod:`lepton.sim.engine`), with every assumption a parameter.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lepton.core.errors import LeptonError
from lepton.core.hints import FULL_GPU_MILLI
from lepton.data import data_dir

POD_COLUMNS = (
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
QOS_COLUMN = "qos"  # optional: a trace without it is all batch (the old model)

# The two workload kinds (the core's ``lepton.core.hints.WorkloadKind`` values).
SERVICE = "Service"
BATCH = "Batch"
# Trace QoS class -> workload kind. The openb trace's ``qos`` column: ``LS``
# (latency-sensitive: inference services that run until deleted), ``Guaranteed``
# and ``Burstable`` (Kubernetes QoS classes of long-running pods) are services;
# ``BE`` (best-effort: training and batch jobs) is batch. Override with
# ``--kind QOS=KIND`` (``lepton simulate``) or ``SimConfig.kind_map``.
DEFAULT_KIND_MAP: Mapping[str, str] = {
    "LS": SERVICE,
    "Guaranteed": SERVICE,
    "Burstable": SERVICE,
    "BE": BATCH,
    "": BATCH,  # no qos column or an empty cell
}


class TraceError(LeptonError, ValueError):
    """A trace file cannot be read; the message names the file, the line and the fix."""


@dataclass(frozen=True, slots=True)
class TracePod:
    """One pod of the trace; times in seconds from the trace start."""

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int  # per GPU; < 1000 is a shared fraction of one GPU
    gpu_spec: tuple[str, ...]  # acceptable trace GPU models; empty = any
    creation_seconds: float
    start_seconds: float  # scheduled_time, or creation_time when never scheduled
    deletion_seconds: float
    qos: str = ""  # the trace's QoS class (LS, BE, Guaranteed, Burstable), "" if none

    @property
    def trace_run_seconds(self) -> float:
        """How long the pod ran in the trace (start to deletion)."""
        return max(0.0, self.deletion_seconds - self.start_seconds)

    @property
    def gpu_share(self) -> float:
        """GPUs held, a fraction for a shared GPU: 2 whole GPUs = 2.0, 460 milli = 0.46."""
        if self.num_gpu <= 0:
            return 0.0
        return self.num_gpu * min(self.gpu_milli, FULL_GPU_MILLI) / FULL_GPU_MILLI

    @property
    def shares_gpu(self) -> bool:
        return self.num_gpu == 1 and 0 < self.gpu_milli < FULL_GPU_MILLI


@dataclass(frozen=True, slots=True)
class TraceNode:
    """One GPU node of the trace's fleet."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str  # the trace's model name: P100, T4, V100M16, V100M32, A10, G2, G3


def default_trace_dir() -> Path:
    """The shipped trace folder (``lepton/data/traces``, or ``$LEPTON_DATA_DIR/traces``)."""
    return data_dir() / "traces"


DEFAULT_POD_LIST = "openb_pod_list_default.csv"
DEFAULT_NODE_LIST = "openb_node_list_gpu_node.csv"


def _open_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise TraceError(
            f"{path}: no such trace file — pass the path of the trace CSV or set "
            "LEPTON_DATA_DIR to the folder holding traces/"
        )
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise TraceError(
                f"{path}: missing columns {', '.join(missing)}; expected {','.join(columns)}"
            )
        return list(reader)


def load_pods(path: Path, limit: int | None = None) -> list[TracePod]:
    """The trace's pods in creation order (ties keep the file's order)."""
    pods: list[TracePod] = []
    for i, row in enumerate(_open_rows(path, POD_COLUMNS)):
        if limit is not None and len(pods) >= limit:
            break
        try:
            creation = float(row["creation_time"])
            scheduled = row["scheduled_time"].strip()
            spec = row["gpu_spec"].strip()
            pods.append(
                TracePod(
                    name=row["name"],
                    cpu_milli=int(row["cpu_milli"]),
                    memory_mib=int(row["memory_mib"]),
                    num_gpu=int(row["num_gpu"]),
                    gpu_milli=int(row["gpu_milli"] or 0),
                    gpu_spec=tuple(s for s in spec.split("|") if s) if spec else (),
                    creation_seconds=creation,
                    start_seconds=float(scheduled) if scheduled else creation,
                    deletion_seconds=float(row["deletion_time"]),
                    qos=(row.get(QOS_COLUMN) or "").strip(),
                )
            )
        except ValueError as error:
            raise TraceError(f"{path}:{i + 2}: unreadable number ({error})") from None
    pods.sort(key=lambda p: p.creation_seconds)
    return pods


def load_nodes(path: Path, limit: int | None = None) -> list[TraceNode]:
    """The trace's GPU nodes in file order."""
    nodes: list[TraceNode] = []
    for i, row in enumerate(_open_rows(path, NODE_COLUMNS)):
        if limit is not None and len(nodes) >= limit:
            break
        try:
            nodes.append(
                TraceNode(
                    name=row["sn"].lower(),
                    cpu_milli=int(row["cpu_milli"]),
                    memory_mib=int(row["memory_mib"]),
                    gpus=int(row["gpu"]),
                    model=row["model"],
                )
            )
        except ValueError as error:
            raise TraceError(f"{path}:{i + 2}: unreadable number ({error})") from None
    return nodes


def sample_nodes(
    nodes: Sequence[TraceNode], count: int, seed: int | None = None
) -> list[TraceNode]:
    """``count`` nodes keeping each GPU model's share of the fleet.

    Without a seed: spread evenly over the list (the list is grouped by model,
    so every k-th node keeps the mix). With a seed: a stratified random sample,
    each model's quota by largest remainder, its nodes drawn at random, so that
    different seeds give different fleets of the same mix (in file order).
    """
    if count >= len(nodes):
        return list(nodes)
    if seed is None:
        step = len(nodes) / count
        return [nodes[int(i * step)] for i in range(count)]
    by_model: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        by_model.setdefault(n.model, []).append(i)
    exact = {m: len(ix) * count / len(nodes) for m, ix in by_model.items()}
    quota = {m: int(q) for m, q in exact.items()}
    for m in sorted(exact, key=lambda m: (quota[m] - exact[m], m))[: count - sum(quota.values())]:
        quota[m] += 1
    rng = random.Random(seed)
    chosen = sorted(i for m, ix in by_model.items() for i in rng.sample(ix, quota[m]))
    return [nodes[i] for i in chosen]


def workload_kind(pod: TracePod, kind_map: Mapping[str, str] = DEFAULT_KIND_MAP) -> str:
    """``Service`` or ``Batch`` for a trace pod, from its QoS class."""
    try:
        kind = kind_map[pod.qos]
    except KeyError:
        known = ", ".join(sorted(k for k in kind_map if k))
        raise TraceError(
            f"pod {pod.name}: qos {pod.qos!r} has no workload kind (known: {known}); "
            f"add one, e.g. --kind {pod.qos or 'QOS'}=Service"
        ) from None
    if kind not in (SERVICE, BATCH):
        raise TraceError(f"qos {pod.qos!r} maps to {kind!r}: write {SERVICE} or {BATCH}")
    return kind


def scale_arrivals(pods: Sequence[TracePod], factor: float) -> list[TracePod]:
    """The trace with every inter-arrival time multiplied by ``factor``.

    Creation times are scaled from the first arrival; each pod keeps its own
    wait in the trace (scheduled - creation) and its lifetime (deletion -
    scheduled), so work and lifetimes are unchanged: ``factor`` < 1 is more load.
    """
    if not factor > 0:
        raise ValueError(
            f"arrival scale {factor!r} must be a positive number (0.5 = twice the load)"
        )
    if factor == 1 or not pods:
        return list(pods)
    first = min(p.creation_seconds for p in pods)
    out = []
    for p in pods:
        creation = first + (p.creation_seconds - first) * factor
        start = creation + (p.start_seconds - p.creation_seconds)
        out.append(
            replace(
                p,
                creation_seconds=creation,
                start_seconds=start,
                deletion_seconds=start + p.trace_run_seconds,
            )
        )
    return out
