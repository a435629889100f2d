"""The model backend: estimated GPU power for nodes without meters and for the kwok fleet.

VMs without NVML access and the simulated kwok nodes of the local cluster
have no meter, yet budgets and dashboards still need watts. This backend
estimates them from the GPU profile and the utilisation implied by the pods
bound to each node, and labels every series ``source="model"`` so that an
estimate is never mistaken for a measurement. One process can serve a whole
simulated fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lepton.core.energy import service_utilization
from lepton.core.hints import HintError, hints_from_pod_metadata
from lepton.core.names import (
    ANNOTATION_GPU_UTILIZATION,
    ANNOTATION_POWER_CAP,
    ANNOTATION_REFERENCE_UTILIZATION_PERCENT,
)
from lepton.core.profiles import get_profile
from lepton_exporter.readings import SOURCE_MODEL, GpuReading, PodRef, Sample

# Optional pod annotation: the fraction of its GPUs' time a pod keeps busy
# (0..1). Without it a service (lepton.dev/reference-utilization-percent) is as
# busy as its demand on that GPU, u_m = u_ref / speed, as the scorer ranks it;
# any other pod holding a GPU counts as fully busy, the conservative estimate
# for training jobs.


@dataclass(frozen=True)
class FleetNode:
    """A node as the model sees it: its GPU product and how many GPUs it has."""

    name: str
    gpu_product: str
    gpu_count: int


@dataclass(frozen=True)
class FleetPod:
    """A running pod bound to a node and holding GPUs."""

    namespace: str
    name: str
    node: str
    gpus: int
    container: str = ""
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def ref(self) -> PodRef:
        return PodRef(self.namespace, self.name, self.container)


def pod_utilization(pod: FleetPod, product: str = "") -> float:
    """The pod's GPU utilisation: its annotation, a service's demand on ``product``, else 1.0."""
    raw = pod.annotations.get(ANNOTATION_GPU_UTILIZATION)
    if raw is None:
        return _service_utilization(pod, product) if product else 1.0
    try:
        return min(max(float(raw), 0.0), 1.0)
    except ValueError:
        return 1.0


def _service_utilization(pod: FleetPod, product: str) -> float:
    """A service pod's u_m on ``product`` at its power cap; 1.0 for any other pod."""
    if ANNOTATION_REFERENCE_UTILIZATION_PERCENT not in pod.annotations:
        return 1.0
    try:
        hints = hints_from_pod_metadata(None, pod.annotations, pod_name=pod.name)
    except HintError:
        return 1.0
    if hints is None or not hints.is_service:
        return 1.0
    profile = get_profile(product)
    limit = pod_power_cap_watts(pod, product)
    return min(1.0, service_utilization(profile, hints.reference_utilization_percent, limit))


def pod_power_cap_watts(pod: FleetPod, product: str) -> float | None:
    """The power limit a pod's ``lepton.dev/power-cap`` annotation asks for, in watts."""
    raw = pod.annotations.get(ANNOTATION_POWER_CAP)
    if raw is None or raw == "None":
        return None
    profile = get_profile(product)
    if raw == "Auto":
        return float(profile.energy_optimal_power_limit_watts)
    try:
        return profile.clamp_power_limit(float(raw))
    except ValueError:
        return None


def model_gpu_uuid(node: str, index: int) -> str:
    """A synthetic, stable id for a modelled GPU; never shaped like a real NVML UUID."""
    return f"MODEL-{node}-gpu{index}"


def estimate_fleet(nodes: Sequence[FleetNode], pods: Sequence[FleetPod]) -> list[GpuReading]:
    """One estimated reading per GPU of every node, from the pods bound to it.

    Pods are laid onto a node's GPUs in name order (the model cannot see which
    physical GPU the device plugin chose); a GPU's utilisation is the sum of
    its pods', capped at 1; its power is the profile's, at the lowest cap its
    pods ask for.
    """
    by_node: dict[str, list[FleetPod]] = {}
    for pod in pods:
        by_node.setdefault(pod.node, []).append(pod)
    readings: list[GpuReading] = []
    for node in nodes:
        profile = get_profile(node.gpu_product)
        holders: list[list[FleetPod]] = [[] for _ in range(node.gpu_count)]
        slot = 0
        for pod in sorted(by_node.get(node.name, []), key=lambda p: (p.namespace, p.name)):
            for _ in range(pod.gpus):
                holders[slot % max(node.gpu_count, 1)].append(pod)
                slot += 1
        for index in range(node.gpu_count):
            gpu_pods = holders[index]
            shares = {p.ref: pod_utilization(p, node.gpu_product) for p in gpu_pods}
            utilization = min(sum(shares.values()), 1.0)
            caps = [
                c for p in gpu_pods if (c := pod_power_cap_watts(p, node.gpu_product)) is not None
            ]
            limit = min(caps) if caps else float(profile.max_power_limit_watts)
            readings.append(
                GpuReading(
                    node=node.name,
                    uuid=model_gpu_uuid(node.name, index),
                    model=node.gpu_product,
                    source=SOURCE_MODEL,
                    power_watts=profile.active_power_watts(utilization, limit),
                    power_limit_watts=limit,
                    power_limit_min_watts=float(profile.min_power_limit_watts),
                    power_limit_max_watts=float(profile.max_power_limit_watts),
                    power_limit_default_watts=float(profile.max_power_limit_watts),
                    utilization_ratio=utilization,
                    idle_watts=float(profile.idle_watts),
                    holders=tuple(p.ref for p in gpu_pods),
                    holder_shares=shares,
                )
            )
    return readings


FleetSource = Callable[[], tuple[Sequence[FleetNode], Sequence[FleetPod]]]


class ModelBackend:
    """Estimates every GPU of the fleet that ``fleet`` returns; one process for many nodes."""

    source = SOURCE_MODEL

    def __init__(self, fleet: FleetSource, node: str | None = None) -> None:
        self.fleet = fleet
        self.node = node

    def read(self) -> Sample:
        nodes, pods = self.fleet()
        if self.node is not None:
            nodes = [n for n in nodes if n.name == self.node]
        return Sample(source=self.source, up=True, gpus=estimate_fleet(nodes, pods))


def static_fleet(nodes: Sequence[FleetNode], pods: Sequence[FleetPod]) -> FleetSource:
    """A fleet that never changes (tests, benchmarks)."""
    return lambda: (nodes, pods)
