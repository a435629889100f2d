"""The energy hints a Lepton pod carries to the Lepton scheduler.

kube-scheduler sends the Lepton scheduler a pod, not its LeptonJob. The operator copies
the job's scheduling hints onto every pod it creates, as annotations under
``lepton.dev/``, so that the Lepton scheduler decides from the pod alone, and the
mapping between the two lives in one place: here.

A pod need not belong to a LeptonJob: any pod with Lepton's annotations and
``schedulerName: lepton-scheduler`` (a Deployment's, a StatefulSet's, a
LeaderWorkerSet's) is a Lepton pod. Without a ``lepton.dev/workload-kind`` it is
scored as a **service**, since long-running workloads are what users run as
Deployments; its workload (the siblings it is spread with) is its owner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from lepton.core.errors import LeptonError
from lepton.core.names import (
    ANNOTATION_BUDGET_PRESSURE,
    ANNOTATION_DEADLINE_TIME,
    ANNOTATION_ENERGY_POLICY,
    ANNOTATION_GPU_MILLI,
    ANNOTATION_GPU_MODELS,
    ANNOTATION_GPUS_PER_REPLICA,
    ANNOTATION_LIFETIME_SECONDS,
    ANNOTATION_MAX_REPLICAS_PER_DOMAIN,
    ANNOTATION_POWER_CAP,
    ANNOTATION_REFERENCE_UTILIZATION_PERCENT,
    ANNOTATION_REPLICAS,
    ANNOTATION_SPARES,
    ANNOTATION_SPREAD_ACROSS,
    ANNOTATION_WORK_GPU_HOURS,
    ANNOTATION_WORKLOAD_KIND,
    ANNOTATION_WORKLOAD_NAME,
    LABEL_JOB_NAME,
)
from lepton.core.times import parse_time

_E = TypeVar("_E", bound=StrEnum)


class WorkloadKind(StrEnum):
    """What a GPU workload is: the two kinds have different energy models.

    ``Batch`` work finishes sooner on a faster GPU and keeps its GPUs busy: it is
    ranked by energy to completion. A ``Service`` lives as long as it lives (until
    deleted) and keeps its GPU only partly busy: it is ranked by watts at its load.
    """

    BATCH = "Batch"
    SERVICE = "Service"


# The hint annotations whose presence makes a pod without a LeptonJob a Lepton pod.
_HINT_ANNOTATIONS = (
    ANNOTATION_ENERGY_POLICY,
    ANNOTATION_WORK_GPU_HOURS,
    ANNOTATION_GPU_MODELS,
    ANNOTATION_WORKLOAD_KIND,
    ANNOTATION_REFERENCE_UTILIZATION_PERCENT,
    ANNOTATION_LIFETIME_SECONDS,
    ANNOTATION_SPREAD_ACROSS,
    ANNOTATION_MAX_REPLICAS_PER_DOMAIN,
    ANNOTATION_POWER_CAP,
)

DEFAULT_REFERENCE_UTILIZATION_PERCENT = 100.0
FULL_GPU_MILLI = 1000


class EnergyPolicy(StrEnum):
    """How a job weighs its energy against its completion time."""

    PERFORMANCE = "Performance"
    BALANCED = "Balanced"
    EFFICIENCY = "Efficiency"


@dataclass(frozen=True)
class JobHints:
    """What the Lepton scheduler needs to know about a LeptonJob to place one of its pods."""

    job_name: str
    energy_policy: EnergyPolicy = EnergyPolicy.BALANCED
    work_reference_gpu_hours: float = 1.0
    gpus_per_replica: int = 1
    replicas: int = 1
    gpu_models: tuple[str, ...] = ()
    deadline_time: datetime | None = None
    spread_across: str | None = None
    max_replicas_per_domain: int | None = None
    spares: int = 0
    # "Auto", "None" or a number of watts, as in the LeptonJob spec.
    power_cap: str = "Auto"
    # 0.0 (budget empty) .. 1.0 (budget exhausted), written by the operator at admission.
    budget_pressure: float = 0.0
    workload_kind: WorkloadKind = WorkloadKind.BATCH
    # A service's demand: percent of one reference GPU (A40) it keeps busy at its expected
    # load, per GPU it holds. Batch work keeps its GPUs fully busy (100).
    reference_utilization_percent: float = DEFAULT_REFERENCE_UTILIZATION_PERCENT
    # A service's lifetime; None runs until deleted. Batch duration comes from its work.
    lifetime_seconds: float | None = None
    # Per GPU; below 1000 the pod holds a share of one GPU (time-slicing or MPS).
    gpu_milli: int = FULL_GPU_MILLI

    @property
    def is_service(self) -> bool:
        return self.workload_kind is WorkloadKind.SERVICE

    @property
    def gpu_share(self) -> float:
        """The fraction of each GPU the pod holds: 1.0 for whole GPUs."""
        return min(max(self.gpu_milli, 1), FULL_GPU_MILLI) / FULL_GPU_MILLI


class HintError(LeptonError, ValueError):
    """A pod's Lepton annotations cannot be read."""


def hints_to_annotations(hints: JobHints) -> dict[str, str]:
    """The pod annotations that carry ``hints``; the label carries the job's name."""
    annotations = {
        ANNOTATION_ENERGY_POLICY: str(hints.energy_policy),
        ANNOTATION_WORK_GPU_HOURS: repr(float(hints.work_reference_gpu_hours)),
        ANNOTATION_GPUS_PER_REPLICA: str(hints.gpus_per_replica),
        ANNOTATION_REPLICAS: str(hints.replicas),
        ANNOTATION_SPARES: str(hints.spares),
        ANNOTATION_POWER_CAP: hints.power_cap,
        ANNOTATION_BUDGET_PRESSURE: repr(float(hints.budget_pressure)),
        ANNOTATION_WORKLOAD_KIND: str(hints.workload_kind),
    }
    if hints.is_service:
        annotations[ANNOTATION_REFERENCE_UTILIZATION_PERCENT] = repr(
            float(hints.reference_utilization_percent)
        )
        if hints.lifetime_seconds is not None:
            annotations[ANNOTATION_LIFETIME_SECONDS] = repr(float(hints.lifetime_seconds))
    if hints.gpu_milli != FULL_GPU_MILLI:
        annotations[ANNOTATION_GPU_MILLI] = str(hints.gpu_milli)
    if hints.gpu_models:
        annotations[ANNOTATION_GPU_MODELS] = ",".join(hints.gpu_models)
    if hints.deadline_time is not None:
        annotations[ANNOTATION_DEADLINE_TIME] = hints.deadline_time.isoformat()
    if hints.spread_across:
        annotations[ANNOTATION_SPREAD_ACROSS] = hints.spread_across
    if hints.max_replicas_per_domain is not None:
        annotations[ANNOTATION_MAX_REPLICAS_PER_DOMAIN] = str(hints.max_replicas_per_domain)
    return annotations


def is_lepton_pod(labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None) -> bool:
    """Whether Lepton scores this pod: a LeptonJob's, or one carrying Lepton's hints."""
    if (labels or {}).get(LABEL_JOB_NAME):
        return True
    return any(key in (annotations or {}) for key in _HINT_ANNOTATIONS)


def owner_name(metadata: Mapping[str, Any]) -> str | None:
    """The name of a pod's controlling owner (its ReplicaSet, StatefulSet, Job …), if any."""
    owners = [o for o in metadata.get("ownerReferences") or () if isinstance(o, Mapping)]
    controller = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    return str(controller["name"]) if controller and controller.get("name") else None


def workload_name(
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
    owner_name: str | None = None,
) -> str | None:
    """The workload whose pods are siblings: the LeptonJob, the annotation, or the owner."""
    labels, annotations = labels or {}, annotations or {}
    if job := labels.get(LABEL_JOB_NAME):
        return job
    if not is_lepton_pod(labels, annotations):
        return None
    return annotations.get(ANNOTATION_WORKLOAD_NAME) or owner_name or None


def hints_from_pod_metadata(
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
    owner_name: str | None = None,
    pod_name: str = "",
) -> JobHints | None:
    """The hints of a Lepton pod, or None for a pod Lepton does not score.

    A LeptonJob's pod is named by its job; any other pod with Lepton's hint
    annotations by ``lepton.dev/workload-name``, else its owner (a ReplicaSet,
    a StatefulSet …), else itself. Raises HintError naming the annotation when
    one is present but unreadable.
    """
    labels = labels or {}
    annotations = annotations or {}
    job_name = workload_name(labels, annotations, owner_name) or (
        pod_name if is_lepton_pod(labels, annotations) else None
    )
    if not job_name:
        return None
    from_job = bool(labels.get(LABEL_JOB_NAME))

    def number(key: str, default: float, cast: type[float] | type[int]) -> float:
        raw = annotations.get(key)
        if raw is None:
            return default
        try:
            return cast(raw)
        except ValueError as error:
            raise HintError(f"annotation {key}={raw!r} is not a number: {error}") from None

    def choice(key: str, enum: type[_E], default: _E) -> _E:
        raw = annotations.get(key, default.value)
        try:
            return enum(raw)
        except ValueError:
            allowed = ", ".join(e.value for e in enum)
            raise HintError(f"annotation {key}={raw!r} is not one of {allowed}") from None

    policy = choice(ANNOTATION_ENERGY_POLICY, EnergyPolicy, EnergyPolicy.BALANCED)

    deadline: datetime | None = None
    if raw_deadline := annotations.get(ANNOTATION_DEADLINE_TIME):
        try:
            deadline = parse_time(raw_deadline)
        except ValueError:
            raise HintError(
                f"annotation {ANNOTATION_DEADLINE_TIME}={raw_deadline!r} is not an RFC 3339 time"
            ) from None

    default_kind = WorkloadKind.BATCH if from_job else WorkloadKind.SERVICE
    kind = choice(ANNOTATION_WORKLOAD_KIND, WorkloadKind, default_kind)
    utilization = float(
        number(
            ANNOTATION_REFERENCE_UTILIZATION_PERCENT, DEFAULT_REFERENCE_UTILIZATION_PERCENT, float
        )
    )
    if not (math.isfinite(utilization) and 0 < utilization <= 100 * 64):
        raise HintError(
            f"annotation {ANNOTATION_REFERENCE_UTILIZATION_PERCENT}={utilization!r} must be a "
            "percentage of one reference GPU above 0, e.g. 30"
        )
    lifetime_raw = annotations.get(ANNOTATION_LIFETIME_SECONDS)
    lifetime = (
        float(number(ANNOTATION_LIFETIME_SECONDS, 0.0, float)) if lifetime_raw is not None else None
    )
    if lifetime is not None and not (math.isfinite(lifetime) and lifetime > 0):
        raise HintError(
            f"annotation {ANNOTATION_LIFETIME_SECONDS}={lifetime_raw!r} must be a positive "
            "number of seconds, or left out for a service that runs until deleted"
        )
    gpu_milli = int(number(ANNOTATION_GPU_MILLI, FULL_GPU_MILLI, int))
    if not 0 < gpu_milli <= FULL_GPU_MILLI:
        raise HintError(
            f"annotation {ANNOTATION_GPU_MILLI}={gpu_milli!r} must be between 1 and 1000 "
            "(thousandths of one GPU)"
        )

    max_per_domain_raw = annotations.get(ANNOTATION_MAX_REPLICAS_PER_DOMAIN)
    models_raw = annotations.get(ANNOTATION_GPU_MODELS, "")
    return JobHints(
        job_name=job_name,
        energy_policy=policy,
        work_reference_gpu_hours=float(number(ANNOTATION_WORK_GPU_HOURS, 1.0, float)),
        gpus_per_replica=int(number(ANNOTATION_GPUS_PER_REPLICA, 1, int)),
        replicas=int(number(ANNOTATION_REPLICAS, 1, int)),
        gpu_models=tuple(m for m in models_raw.split(",") if m),
        deadline_time=deadline,
        spread_across=annotations.get(ANNOTATION_SPREAD_ACROSS) or None,
        max_replicas_per_domain=(
            int(number(ANNOTATION_MAX_REPLICAS_PER_DOMAIN, 0, int))
            if max_per_domain_raw is not None
            else None
        ),
        spares=int(number(ANNOTATION_SPARES, 0, int)),
        power_cap=annotations.get(ANNOTATION_POWER_CAP, "Auto"),
        budget_pressure=float(number(ANNOTATION_BUDGET_PRESSURE, 0.0, float)),
        workload_kind=kind,
        reference_utilization_percent=utilization,
        lifetime_seconds=lifetime,
        gpu_milli=gpu_milli,
    )
