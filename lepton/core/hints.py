"""The energy hints a LeptonJob's pods carry to the scheduler extender.

kube-scheduler sends the extender a pod, not its LeptonJob. The operator copies
the job's scheduling hints onto every pod it creates, as annotations under
``lepton.dev/``, so that the extender decides from the pod alone, and the
mapping between the two lives in one place: here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

GROUP = "lepton.dev"
VERSION = "v1alpha1"

# The node label GPU feature discovery writes, e.g. "NVIDIA-A40"; the profiles map it to a model.
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"

# Labels tying pods and Jobs to their LeptonJob.
LABEL_JOB_NAME = f"{GROUP}/job-name"
LABEL_JOB_UID = f"{GROUP}/job-uid"
LABEL_BUDGET_NAME = f"{GROUP}/budget-name"

# Annotations carrying the hints.
ANNOTATION_ENERGY_POLICY = f"{GROUP}/energy-policy"
ANNOTATION_WORK_GPU_HOURS = f"{GROUP}/work-reference-gpu-hours"
ANNOTATION_GPU_MODELS = f"{GROUP}/gpu-models"
ANNOTATION_GPUS_PER_REPLICA = f"{GROUP}/gpus-per-replica"
ANNOTATION_REPLICAS = f"{GROUP}/replicas"
ANNOTATION_DEADLINE_TIME = f"{GROUP}/deadline-time"
ANNOTATION_SPREAD_ACROSS = f"{GROUP}/spread-across"
ANNOTATION_MAX_REPLICAS_PER_DOMAIN = f"{GROUP}/max-replicas-per-domain"
ANNOTATION_SPARES = f"{GROUP}/spares"
ANNOTATION_POWER_CAP = f"{GROUP}/power-cap"
ANNOTATION_BUDGET_PRESSURE = f"{GROUP}/budget-pressure"

# Written by the operator on running pods when an exhausted CapPower budget lowers their
# GPU power limit (watts); the exporter applies the lower of this and the job's powerCap.
ANNOTATION_POWER_LIMIT_WATTS = f"{GROUP}/power-limit-watts"
# How busy a pod keeps its GPUs (0..1, default 1.0): read by the exporter's model backend.
ANNOTATION_GPU_UTILIZATION = f"{GROUP}/gpu-utilization"
# The SDK's phase table (compact JSON), written by the SDK on its own pod.
ANNOTATION_PHASES = f"{GROUP}/phases"


class EnergyPolicy(StrEnum):
    """How a job weighs its energy against its completion time."""

    PERFORMANCE = "Performance"
    BALANCED = "Balanced"
    EFFICIENCY = "Efficiency"


@dataclass(frozen=True)
class JobHints:
    """What the extender needs to know about a LeptonJob to place one of its pods."""

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


class HintError(ValueError):
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
    }
    if hints.gpu_models:
        annotations[ANNOTATION_GPU_MODELS] = ",".join(hints.gpu_models)
    if hints.deadline_time is not None:
        annotations[ANNOTATION_DEADLINE_TIME] = hints.deadline_time.isoformat()
    if hints.spread_across:
        annotations[ANNOTATION_SPREAD_ACROSS] = hints.spread_across
    if hints.max_replicas_per_domain is not None:
        annotations[ANNOTATION_MAX_REPLICAS_PER_DOMAIN] = str(hints.max_replicas_per_domain)
    return annotations


def hints_from_pod_metadata(
    labels: dict[str, str] | None, annotations: dict[str, str] | None
) -> JobHints | None:
    """The hints of a LeptonJob pod, or None for a pod that is not a LeptonJob's.

    Raises HintError naming the annotation when one is present but unreadable.
    """
    labels = labels or {}
    annotations = annotations or {}
    job_name = labels.get(LABEL_JOB_NAME)
    if not job_name:
        return None

    def number(key: str, default: float, cast: type[float] | type[int]) -> float:
        raw = annotations.get(key)
        if raw is None:
            return default
        try:
            return cast(raw)
        except ValueError as error:
            raise HintError(f"annotation {key}={raw!r} is not a number: {error}") from None

    policy_raw = annotations.get(ANNOTATION_ENERGY_POLICY, EnergyPolicy.BALANCED.value)
    try:
        policy = EnergyPolicy(policy_raw)
    except ValueError:
        allowed = ", ".join(p.value for p in EnergyPolicy)
        raise HintError(
            f"annotation {ANNOTATION_ENERGY_POLICY}={policy_raw!r} is not one of {allowed}"
        ) from None

    deadline: datetime | None = None
    if raw_deadline := annotations.get(ANNOTATION_DEADLINE_TIME):
        try:
            deadline = datetime.fromisoformat(raw_deadline.replace("Z", "+00:00"))
        except ValueError:
            raise HintError(
                f"annotation {ANNOTATION_DEADLINE_TIME}={raw_deadline!r} is not an RFC 3339 time"
            ) from None

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
    )
