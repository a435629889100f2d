"""Builders of the objects the tests create, one each (in the manner of kueue's MakeWorkload).

Each returns the manifest as a dict; keyword arguments set what a test cares about and the
rest is the one default, so two tests that build "a pod holding one GPU" build the same pod.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lepton.cluster.local import LocalCluster
from lepton.core.hints import JobHints, hints_to_annotations
from lepton.core.names import API_VERSION, LABEL_JOB_NAME, RESOURCE_GPU, SCHEDULER_NAME


def gpu_pod(
    name: str,
    *,
    gpus: int = 1,
    node: str | None = None,
    scheduler: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    container: str = "main",
    image: str = "busybox",
    requests: bool = False,
    restart_policy: str | None = None,
) -> dict[str, Any]:
    """A Pod whose one container holds ``gpus`` GPUs (as a limit; also requested if asked)."""
    resources: dict[str, Any] = {"limits": {RESOURCE_GPU: str(gpus)}}
    if requests:
        resources = {"requests": {RESOURCE_GPU: str(gpus)}, **resources}
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {}
    if node:
        spec["nodeName"] = node
    if scheduler:
        spec["schedulerName"] = scheduler
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    spec["containers"] = [{"name": container, "image": image, "resources": resources}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def job_pod(name: str, hints: JobHints, gpus: int = 1) -> dict[str, Any]:
    """A pod of LeptonJob ``hints.job_name`` for the lepton-scheduler profile, with its hints."""
    return gpu_pod(
        name,
        gpus=gpus,
        scheduler=SCHEDULER_NAME,
        labels={LABEL_JOB_NAME: hints.job_name},
        annotations=hints_to_annotations(hints),
        restart_policy="Never",
    )


def _metadata(name: str, **fields: str | None) -> dict[str, str]:
    """An object's metadata: its name and the given ``fields`` that are not None."""
    return {"name": name, **{k: v for k, v in fields.items() if v is not None}}


def lepton_job(
    name: str,
    budget: str = "team",
    seconds: int = 3600,
    *,
    namespace: str | None = None,
    uid: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A LeptonJob of ``seconds`` reference-GPU seconds on an A40, charged to ``budget``.

    ``spec`` fields (camelCase, as in the CRD) replace the defaults; ``namespace`` and ``uid``
    go in the metadata when given (a job built without a cluster needs a UID for its owner).
    """
    return {
        "apiVersion": API_VERSION,
        "kind": "LeptonJob",
        "metadata": _metadata(name, namespace=namespace, uid=uid),
        "spec": {
            "budgetName": budget,
            "gpuModels": ["A40"],
            "work": {"referenceGpuSeconds": seconds},
            "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}},
            **spec,
        },
    }


def energy_budget(
    limit: float, name: str = "team", *, namespace: str | None = None, **spec: Any
) -> dict[str, Any]:
    """An EnergyBudget of ``limit`` watt-hours (and any other spec fields)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "EnergyBudget",
        "metadata": _metadata(name, namespace=namespace),
        "spec": {"limitWattHours": limit, **spec},
    }


def apply(cluster: LocalCluster, namespace: str, *objects: dict[str, Any]) -> None:
    """``kubectl apply`` the objects into ``namespace``, as one List."""
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
