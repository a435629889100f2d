"""How long a LeptonJob pod runs on a kwok node: the GPU it landed on decides.

kwok has no GPUs, so on the local cluster nothing makes a pod on an H100 finish
sooner than the same pod on a T4. This process does: it watches running
LeptonJob pods, works out from the job's hints (``lepton.core.hints``) and the
node's GPU profile how long the pod's share of the work takes there — the same
:func:`lepton.core.energy.job_duration_seconds` the scheduler and the operator
use — divided by a time-compression factor, and then annotates the pod
``lepton.dev/kwok-release=true``, which the cluster's kwok stages
(``data/kwok-pod-stages.yaml``) turn into a completed container.

It is part of the local simulation only: on a real cluster the work finishes
when the container does.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lepton.core.energy import chosen_power_limit_watts, job_duration_seconds
from lepton.core.hints import HintError, hints_from_pod_metadata
from lepton.core.names import (
    ANNOTATION_KWOK_RELEASE,
    LABEL_GPU_PRODUCT,
    LABEL_JOB_NAME,
    LABEL_LEPTON_GPU_MODEL,
)
from lepton.core.profiles import get_profile
from lepton.kube import api_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningPod:
    """What the simulator needs to know about one running pod."""

    namespace: str
    name: str
    node_gpu_model: str
    started: datetime
    labels: dict[str, str]
    annotations: dict[str, str]


def pod_run_seconds(pod: RunningPod, time_compression: float) -> float:
    """Wall seconds the pod runs on the local cluster: its work at its GPU's speed, compressed."""
    try:
        hints = hints_from_pod_metadata(pod.labels, pod.annotations)
    except HintError as error:
        log.warning("pod %s/%s: %s; releasing it at once", pod.namespace, pod.name, error)
        return 0.0
    if hints is None:
        return 0.0
    profile = get_profile(pod.node_gpu_model)
    work_per_replica = hints.work_reference_gpu_hours / max(1, hints.replicas)
    seconds = job_duration_seconds(
        pod.node_gpu_model,
        work_per_replica,
        hints.gpus_per_replica,
        chosen_power_limit_watts(profile, hints.power_cap),
    )
    return seconds / max(time_compression, 1e-9)


def due_for_release(
    pods: list[RunningPod], now: datetime, time_compression: float
) -> list[RunningPod]:
    """The pods whose work is done by ``now``."""
    return [
        p for p in pods if (now - p.started).total_seconds() >= pod_run_seconds(p, time_compression)
    ]


class WorkSimulator:
    """Releases LeptonJob pods on kwok nodes when their simulated work is done."""

    def __init__(self, core_api: Any, time_compression: float, poll_seconds: float = 0.5) -> None:
        self.api = core_api
        self.time_compression = time_compression
        self.poll_seconds = poll_seconds
        self.released = 0

    def _node_models(self) -> dict[str, str]:
        models = {}
        for node in self.api.list_node().items:
            labels = node.metadata.labels or {}
            models[node.metadata.name] = labels.get(LABEL_LEPTON_GPU_MODEL) or labels.get(
                LABEL_GPU_PRODUCT, ""
            )
        return models

    def running_pods(self) -> list[RunningPod]:
        models = self._node_models()
        pods = []
        for pod in self.api.list_pod_for_all_namespaces(
            label_selector=LABEL_JOB_NAME, field_selector="status.phase=Running"
        ).items:
            annotations = pod.metadata.annotations or {}
            if annotations.get(ANNOTATION_KWOK_RELEASE) == "true" or not pod.spec.node_name:
                continue
            started = pod.status.start_time or pod.metadata.creation_timestamp
            pods.append(
                RunningPod(
                    namespace=pod.metadata.namespace,
                    name=pod.metadata.name,
                    node_gpu_model=models.get(pod.spec.node_name, ""),
                    started=started,
                    labels=pod.metadata.labels or {},
                    annotations=annotations,
                )
            )
        return pods

    def step(self) -> int:
        """Release every pod that is due; returns how many."""
        due = due_for_release(self.running_pods(), datetime.now(UTC), self.time_compression)
        for pod in due:
            self.api.patch_namespaced_pod(
                pod.name,
                pod.namespace,
                {"metadata": {"annotations": {ANNOTATION_KWOK_RELEASE: "true"}}},
            )
            self.released += 1
        return len(due)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception as error:  # the apiserver may be restarting; try again
                log.warning("work simulator: %s", error)
            stop.wait(self.poll_seconds)


def run(kubeconfig: str, time_compression: float) -> None:
    """Run until interrupted (``lepton cluster simulate-work``)."""
    from kubernetes import client

    api = client.CoreV1Api(api_client(kubeconfig))
    stop = threading.Event()
    try:
        WorkSimulator(api, time_compression).run(stop)
    except KeyboardInterrupt:
        stop.set()
