"""From a LeptonJob to its child ``batch/v1`` Job and its energy estimate, as pure functions.

The operator's handlers only call these and the API (the dask-kubernetes operator's shape):
what the Job looks like — suspended, on Lepton's scheduler, with GPU limits, node affinity for
the acceptable GPU models and the labels and hint annotations that tie its pods to the
LeptonJob — is decided here and tested without a cluster.

The admission estimate is conservative: a job that accepts several GPU models reserves the
energy of the most energy-hungry one, because the scheduler may place it there.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lepton.api.v1alpha1 import LeptonJobSpec
from lepton.core.energy import (
    SECONDS_PER_HOUR,
    chosen_power_limit_watts,
    job_duration_seconds,
    job_energy_watt_hours,
    service_power_watts,
)
from lepton.core.hints import DEFAULT_REFERENCE_UTILIZATION_PERCENT, JobHints, hints_to_annotations
from lepton.core.names import (
    API_VERSION,
    LABEL_BUDGET_NAME,
    LABEL_GPU_PRODUCT,
    LABEL_JOB_NAME,
    LABEL_JOB_UID,
    RESOURCE_GPU,
    SCHEDULER_NAME,
)
from lepton.core.profiles import get_profile, known_models


@dataclass(frozen=True)
class EnergyEstimate:
    """The model estimate reserved for a job at admission (never a measurement)."""

    gpu_model: str
    watt_hours: float
    duration_seconds: float
    power_limit_watts: float
    gpus: int


def acceptable_models(spec: LeptonJobSpec) -> tuple[str, ...]:
    """The GPU models a job may run on; an empty list in the spec means every known model."""
    if spec.gpu_models:
        return tuple(m.value for m in spec.gpu_models)
    return known_models()


# A service with no lifetimeSeconds reserves this long (one default budget period) at a time.
SERVICE_ESTIMATE_SECONDS = 86_400.0


def estimate_energy(spec: LeptonJobSpec) -> EnergyEstimate:
    """The energy to reserve: the estimate for the most energy-hungry acceptable model.

    Batch: energy to completion of its work. Service: its watts at its load over its
    lifetime (``SERVICE_ESTIMATE_SECONDS`` when it has none).
    """
    gpus = spec.total_gpus()
    cap = spec.power_cap_hint()
    work = spec.work_reference_gpu_hours()
    service = spec.service
    lifetime = float((service.lifetime_seconds if service else None) or SERVICE_ESTIMATE_SECONDS)

    def estimate(model: str) -> EnergyEstimate:
        profile = get_profile(model)
        limit = chosen_power_limit_watts(profile, cap)
        if service is not None:
            watts = service_power_watts(
                profile, service.reference_utilization_percent, gpus, 1000, limit
            )
            watt_hours, seconds = watts * lifetime / SECONDS_PER_HOUR, lifetime
        else:
            watt_hours = job_energy_watt_hours(model, work, gpus, limit)
            seconds = job_duration_seconds(model, work, gpus, limit)
        return EnergyEstimate(
            gpu_model=model,
            watt_hours=watt_hours,
            duration_seconds=seconds,
            power_limit_watts=limit,
            gpus=gpus,
        )

    # acceptable_models is never empty; the first of equals wins, as before
    estimates = [estimate(model) for model in acceptable_models(spec)]
    return max(estimates, key=lambda e: e.watt_hours)


def estimated_consumption_watt_hours(estimate: EnergyEstimate, run_seconds: float) -> float:
    """Energy used after ``run_seconds``, at the estimate's average power (a model figure).

    Used where no meter reports (no Prometheus): the job draws its estimated average power for
    as long as it runs, so a job running longer than estimated overruns its reservation.
    """
    if estimate.duration_seconds <= 0:
        return estimate.watt_hours
    return estimate.watt_hours * max(0.0, run_seconds) / estimate.duration_seconds


def job_hints(name: str, spec: LeptonJobSpec, budget_pressure: float = 0.0) -> JobHints:
    """The scheduler hints of a LeptonJob."""
    redundancy = spec.redundancy
    return JobHints(
        job_name=name,
        energy_policy=spec.energy_policy,
        work_reference_gpu_hours=spec.work_reference_gpu_hours(),
        gpus_per_replica=spec.gpus_per_replica,
        replicas=spec.replicas,
        gpu_models=tuple(m.value for m in spec.gpu_models),
        deadline_time=spec.deadline_time,
        spread_across=redundancy.spread_across if redundancy else None,
        max_replicas_per_domain=redundancy.max_replicas_per_domain if redundancy else None,
        spares=redundancy.spares if redundancy else 0,
        power_cap=spec.power_cap_hint(),
        budget_pressure=budget_pressure,
        workload_kind=spec.workload_kind,
        reference_utilization_percent=(
            float(spec.service.reference_utilization_percent)
            if spec.service is not None
            else DEFAULT_REFERENCE_UTILIZATION_PERCENT
        ),
        lifetime_seconds=(
            float(spec.service.lifetime_seconds)
            if spec.service is not None and spec.service.lifetime_seconds is not None
            else None
        ),
    )


def _product_names(spec: LeptonJobSpec) -> list[str]:
    names: list[str] = []
    for model in acceptable_models(spec):
        for product in get_profile(model).product_names:
            if product not in names:
                names.append(product)
    return names


def _with_gpu_affinity(pod_spec: dict[str, Any], products: list[str]) -> None:
    expression = {"key": LABEL_GPU_PRODUCT, "operator": "In", "values": products}
    affinity = pod_spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({"matchExpressions": []})
    for term in terms:  # terms are ORed: each must carry the GPU constraint
        term.setdefault("matchExpressions", []).append(expression)


def child_job_labels(name: str, uid: str, budget_name: str) -> dict[str, str]:
    """The labels tying a Job and its pods to their LeptonJob and budget."""
    return {LABEL_JOB_NAME: name, LABEL_JOB_UID: uid, LABEL_BUDGET_NAME: budget_name}


def build_job(
    lepton_job: Mapping[str, Any],
    *,
    scheduler_name: str = SCHEDULER_NAME,
    budget_pressure: float = 0.0,
) -> dict[str, Any]:
    """The child ``batch/v1`` Job of a LeptonJob (a full object as the API returns it).

    The Job is created suspended; admission un-suspends it. ``parallelism = completions =
    replicas``; spares (extra replicas held ready) are carried as a hint and not yet run.
    """
    metadata = lepton_job["metadata"]
    name: str = metadata["name"]
    uid: str = metadata["uid"]
    spec = LeptonJobSpec.model_validate(lepton_job["spec"])
    labels = child_job_labels(name, uid, spec.budget_name)

    template: dict[str, Any] = copy.deepcopy(spec.template)
    pod_meta = template.setdefault("metadata", {})
    pod_meta["labels"] = {**pod_meta.get("labels", {}), **labels}
    pod_meta["annotations"] = {
        **pod_meta.get("annotations", {}),
        **hints_to_annotations(job_hints(name, spec, budget_pressure)),
    }
    pod_spec = template.setdefault("spec", {})
    pod_spec["schedulerName"] = scheduler_name
    pod_spec.setdefault("restartPolicy", "Never")
    containers = pod_spec.get("containers") or []
    if not containers:
        raise ValueError(
            f"LeptonJob {name!r}: spec.template.spec.containers is empty — add the container "
            "that runs the job"
        )
    limits = containers[0].setdefault("resources", {}).setdefault("limits", {})
    limits[RESOURCE_GPU] = spec.gpus_per_replica
    _with_gpu_affinity(pod_spec, _product_names(spec))

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": metadata.get("namespace"),
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "LeptonJob",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "suspend": True,
            "parallelism": spec.replicas,
            "completions": spec.replicas,
            "template": template,
        },
    }
