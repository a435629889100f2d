"""Fleets of fake GPU nodes for the local control plane.

A fleet is a list of node groups. Each node becomes a v1.Node that kwok
manages (annotation ``kwok.x-k8s.io/node: fake``), with ``nvidia.com/gpu``
capacity, the GPU feature discovery product label, a zone, CPU and memory, so
that the real kube-scheduler and Lepton's scheduler see what they would see on a
GPU cluster. Fleets come from the built-in default, a YAML file, or the
Alibaba trace's node list.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lepton.core.errors import LeptonError
from lepton.core.names import (
    LABEL_GPU_COUNT,
    LABEL_GPU_PRODUCT,
    LABEL_HOST_IDLE_WATTS,
    LABEL_HOSTNAME,
    LABEL_LEPTON_GPU_MODEL,
    LABEL_ZONE,
    RESOURCE_GPU,
)

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
TAINT_KWOK = "kwok.x-k8s.io/node"

# GPU feature discovery writes the product name with spaces replaced by dashes.
# Models the trace names without disclosing (G2, G3) or by memory size get a
# product string of their own so that they stay distinguishable.
PRODUCT_LABELS: dict[str, str] = {
    "A40": "NVIDIA-A40",
    "A100": "NVIDIA-A100-SXM4-80GB",
    "H100": "NVIDIA-H100-80GB-HBM3",
    "L40S": "NVIDIA-L40S",
    "L4": "NVIDIA-L4",
    "T4": "Tesla-T4",
    "V100": "Tesla-V100-SXM2-16GB",
    "V100M16": "Tesla-V100-SXM2-16GB",
    "V100M32": "Tesla-V100-SXM2-32GB",
    "P100": "Tesla-P100-PCIE-16GB",
    "A10": "NVIDIA-A10",
    "G2": "Alibaba-G2",
    "G3": "Alibaba-G3",
}


class FleetError(LeptonError, ValueError):
    """A fleet description is invalid; the message says which entry and how to fix it."""


@dataclass(frozen=True)
class NodeGroup:
    """``count`` identical nodes."""

    name_prefix: str
    count: int
    gpu_model: str
    gpus_per_node: int
    zone: str
    cpu_millis: int = 64_000
    memory_mebibytes: int = 262_144
    # A trace node keeps its serial number as its name, without a "-0" suffix.
    exact_name: bool = False
    # The host's measured idle draw without GPUs (the lepton.dev/host-idle-watts label);
    # None: the scorer's sourced default for the node's GPU count.
    host_idle_watts: int | None = None

    def node_names(self) -> list[str]:
        if self.exact_name:
            return [self.name_prefix]
        return [f"{self.name_prefix}-{i}" for i in range(self.count)]


@dataclass(frozen=True)
class Fleet:
    """The fake nodes of one local cluster."""

    groups: tuple[NodeGroup, ...]

    @property
    def node_count(self) -> int:
        return sum(g.count for g in self.groups)

    def nodes(self) -> list[dict[str, Any]]:
        """The v1.Node objects, ready to create."""
        return [node_object(g, name) for g in self.groups for name in g.node_names()]


DEFAULT_FLEET = Fleet(
    groups=(
        NodeGroup("a40", 2, "A40", 4, "zone-a"),
        NodeGroup("a100", 2, "A100", 8, "zone-b"),
        NodeGroup("t4", 2, "T4", 4, "zone-c"),
        NodeGroup("l4", 2, "L4", 4, "zone-a"),
        NodeGroup("a40-b", 1, "A40", 4, "zone-b"),
        NodeGroup("a40-c", 1, "A40", 4, "zone-c"),
    )
)


def product_label(gpu_model: str) -> str:
    """The ``nvidia.com/gpu.product`` value GPU feature discovery would write for a model."""
    return PRODUCT_LABELS.get(gpu_model, f"NVIDIA-{gpu_model}")


def node_object(group: NodeGroup, name: str) -> dict[str, Any]:
    """One kwok-managed v1.Node with GPU capacity and the labels the scheduler reads."""
    resources = {
        "cpu": f"{group.cpu_millis}m",
        "memory": f"{group.memory_mebibytes}Mi",
        "pods": "110",
        RESOURCE_GPU: str(group.gpus_per_node),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                LABEL_HOSTNAME: name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                LABEL_ZONE: group.zone,
                LABEL_GPU_PRODUCT: product_label(group.gpu_model),
                LABEL_GPU_COUNT: str(group.gpus_per_node),
                LABEL_LEPTON_GPU_MODEL: group.gpu_model,
                **(
                    {LABEL_HOST_IDLE_WATTS: str(group.host_idle_watts)}
                    if group.host_idle_watts is not None
                    else {}
                ),
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "containerRuntimeVersion": "fake",
                "kernelVersion": "",
                "osImage": "",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
            },
            "phase": "Running",
        },
    }


def ready_node_names(api: Any) -> set[str]:
    """The nodes kwok has readied: condition Ready and kwok's start-up taint gone.

    ``api`` is a ``kubernetes.client.CoreV1Api``; each call lists every node.
    """
    return {
        n.metadata.name
        for n in api.list_node().items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        and not any(t.key == TAINT_KWOK for t in n.spec.taints or [])
    }


def _int(entry: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = entry.get(key, default)
    if value is None:
        raise FleetError(f"{where}: '{key}' is required")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FleetError(f"{where}: '{key}' must be a non-negative integer, got {value!r}")
    return value


def fleet_from_dict(data: dict[str, Any]) -> Fleet:
    """Read a fleet description: a fleet YAML file, or a trace node list ``.csv``."""
    groups_raw = data.get("nodeGroups")
    if not isinstance(groups_raw, list) or not groups_raw:
        raise FleetError("a fleet file needs a non-empty list 'nodeGroups'")
    groups = []
    for i, entry in enumerate(groups_raw):
        where = f"nodeGroups[{i}]"
        if not isinstance(entry, dict):
            raise FleetError(f"{where}: expected a mapping")
        name = entry.get("name")
        model = entry.get("gpuModel")
        zone = entry.get("zone")
        for key, value in (("name", name), ("gpuModel", model), ("zone", zone)):
            if not isinstance(value, str) or not value:
                raise FleetError(f"{where}: '{key}' must be a non-empty string")
        groups.append(
            NodeGroup(
                name_prefix=str(name),
                count=_int(entry, "count", where, 1),
                gpu_model=str(model),
                gpus_per_node=_int(entry, "gpusPerNode", where),
                zone=str(zone),
                cpu_millis=_int(entry, "cpuMillis", where, 64_000),
                memory_mebibytes=_int(entry, "memoryMebibytes", where, 262_144),
                host_idle_watts=(
                    _int(entry, "hostIdleWatts", where) if "hostIdleWatts" in entry else None
                ),
            )
        )
    names = [n for g in groups for n in g.node_names()]
    if len(set(names)) != len(names):
        raise FleetError("node group names produce duplicate node names: make each 'name' unique")
    return Fleet(tuple(groups))


def load_fleet(path: Path, zones: int = 3, limit: int | None = None) -> Fleet:
    """A fleet from a YAML file, or from a trace node list (``*.csv``)."""
    if path.suffix == ".csv":
        return fleet_from_trace(path, zones=zones, limit=limit)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise FleetError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise FleetError(f"{path}: expected a mapping with 'nodeGroups'")
    return fleet_from_dict(data)


def fleet_from_trace(path: Path, zones: int = 3, limit: int | None = None) -> Fleet:
    """The Alibaba trace's node list (columns ``sn,cpu_milli,memory_mib,gpu,model``) as a fleet.

    The trace has no zones: nodes are dealt round-robin into ``zones`` zones.
    """
    groups = []
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if limit is not None and i >= limit:
                break
            try:
                groups.append(
                    NodeGroup(
                        name_prefix=row["sn"].lower(),
                        count=1,
                        gpu_model=row["model"],
                        gpus_per_node=int(row["gpu"]),
                        zone=f"zone-{chr(ord('a') + i % zones)}",
                        cpu_millis=int(row["cpu_milli"]),
                        memory_mebibytes=int(row["memory_mib"]),
                        exact_name=True,
                    )
                )
            except (KeyError, ValueError) as error:
                raise FleetError(
                    f"{path}:{i + 2}: expected columns sn,cpu_milli,memory_mib,gpu,model: {error}"
                ) from None
    return Fleet(tuple(groups))
