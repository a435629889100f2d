"""The Alibaba GPU trace as plain records: pods to replay and nodes to replay them on.

The simulator reads the trace's CSV files (``openb_pod_list_*.csv``,
``openb_node_list_*.csv``, see ``lepton/data/README.md``) into small frozen
records and nothing else: how a record becomes work, energy or a placement is
decided elsewhere (:mod:`lepton.sim.engine`), with every assumption a parameter.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

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
FULL_GPU_MILLI = 1000


class TraceError(ValueError):
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


def sample_nodes(nodes: list[TraceNode], count: int) -> list[TraceNode]:
    """``count`` nodes spread evenly over the list, keeping each model's share.

    The node list is grouped by model, so taking every k-th node keeps the mix.
    """
    if count >= len(nodes):
        return list(nodes)
    step = len(nodes) / count
    return [nodes[int(i * step)] for i in range(count)]
