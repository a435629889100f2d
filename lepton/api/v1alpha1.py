"""The v1alpha1 API of Lepton: EnergyBudget and LeptonJob, as pydantic models.

These models are the one place where the shape of the API is written down. The CRDs in
``crds/`` are generated from them (``python -m lepton.api.crdgen``), the operator parses specs
with them, and the validation rules the apiserver enforces (CEL ``x-kubernetes-validations``)
are declared beside the fields they guard, each with a message that names the field and the fix.

Conventions followed (Kubernetes API conventions): camelCase field names with units in them,
integers rather than floats in spec, CamelCase enum values, ``conditions`` as a list keyed by
``type``. Status carries watt-hours as numbers because accounting is fractional.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from lepton.core.hints import EnergyPolicy, WorkloadKind
from lepton.core.names import ANNOTATION_PHASES, GROUP, VERSION

__all__ = [
    "GPU_MODELS",
    "GROUP",
    "MAX_GPUS_PER_REPLICA",
    "MIN_PERIOD_SECONDS",
    "OLD_HELD_FIELD",
    "VERSION",
    "Condition",
    "ConsumptionSource",
    "EnergyBudget",
    "EnergyBudgetSpec",
    "EnergyBudgetStatus",
    "EnergyPolicy",
    "GpuModel",
    "LeptonJob",
    "LeptonJobSpec",
    "LeptonJobState",
    "LeptonJobStatus",
    "PowerCap",
    "PowerCapMode",
    "Redundancy",
    "Reservation",
    "Service",
    "WhenExhausted",
    "Work",
    "held_watt_hours",
]


class GpuModel(StrEnum):
    """The GPU model short names of the API, as in the GPU profiles (lepton.core.profiles)."""

    A40 = "A40"
    A100 = "A100"
    H100 = "H100"
    L40S = "L40S"
    L4 = "L4"
    T4 = "T4"
    V100 = "V100"
    P100 = "P100"
    A10 = "A10"


# A test checks that every one of them has a GPU profile.
GPU_MODELS: tuple[str, ...] = tuple(m.value for m in GpuModel)

# The largest node in the fleet has 8 GPUs; 16 leaves room for 16-GPU HGX boxes and no more:
# a replica asking for more can never be scheduled, so it is rejected at the door.
MAX_GPUS_PER_REPLICA = 16

# A period shorter than a minute would roll over faster than the operator accounts (every
# second) and make the budget meaningless; one minute still lets tests exercise rollover.
MIN_PERIOD_SECONDS = 60
DEFAULT_PERIOD_SECONDS = 86_400


def _cel(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


def _validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def _map_list(*keys: str) -> dict[str, Any]:
    """Schema extras of a list the apiserver merges by ``keys`` (conditions by type, …)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )


class WhenExhausted(StrEnum):
    """What happens to a budget's jobs when its watt-hours are used up."""

    QUEUE = "Queue"
    SUSPEND_RUNNING = "SuspendRunning"
    CAP_POWER = "CapPower"


class PowerCapMode(StrEnum):
    """How the GPUs of a job are power-limited."""

    AUTO = "Auto"
    NONE = "None"
    WATTS = "Watts"


class ConsumptionSource(StrEnum):
    """Where a consumed-energy figure comes from: a meter, or the energy model."""

    MEASURED = "Measured"
    ESTIMATED = "Estimated"


class LeptonJobState(StrEnum):
    """The one-word state shown by ``kubectl get leptonjobs``."""

    PENDING = "Pending"
    WAITING = "Waiting"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    FINISHED = "Finished"
    FAILED = "Failed"


class Condition(_Model):
    """One observed condition of an object, keyed by ``type``."""

    type: str = Field(description="The condition's name, e.g. BudgetReserved.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="A human-readable explanation.")
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


# --------------------------------------------------------------------------- EnergyBudget


class JobSelector(_Model):
    """Which LeptonJobs may draw on a budget, by label."""

    match_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels a LeptonJob must carry to be admitted against this budget.",
    )


class EnergyBudgetSpec(_Model):
    """A team's allowance of watt-hours per period."""

    limit_watt_hours: int = Field(
        description="Watt-hours the budget's jobs may use per period.",
        json_schema_extra=_validations(
            _cel(
                "self > 0",
                "spec.limitWattHours must be a positive whole number of watt-hours, e.g. 5000",
            )
        ),
    )
    period_seconds: int = Field(
        default=DEFAULT_PERIOD_SECONDS,
        description="Length of an accounting period; consumption resets when a period ends.",
        json_schema_extra=_validations(
            _cel(
                f"self >= {MIN_PERIOD_SECONDS}",
                f"spec.periodSeconds must be at least {MIN_PERIOD_SECONDS} (one minute); "
                f"the default is {DEFAULT_PERIOD_SECONDS} (one day)",
            )
        ),
    )
    when_exhausted: WhenExhausted = Field(
        default=WhenExhausted.QUEUE,
        description="Queue: new jobs wait. SuspendRunning: running jobs are suspended too. "
        "CapPower: running jobs get a lower GPU power limit.",
    )
    capped_power_percent: int = Field(
        default=70,
        description="Under CapPower, the GPU power limit as a percentage of the maximum.",
        json_schema_extra=_validations(
            _cel(
                "self >= 30 && self <= 100",
                "spec.cappedPowerPercent must be between 30 and 100 (percent of the GPU's "
                "maximum power limit)",
            )
        ),
    )
    job_selector: JobSelector | None = Field(
        default=None, description="Only LeptonJobs with these labels may use the budget."
    )


class Reservation(_Model):
    """Watt-hours held for one admitted LeptonJob in the current period."""

    job_uid: str = Field(description="The LeptonJob's metadata.uid: admission is keyed by it.")
    job_name: str
    gpu_model: str = Field(description="The GPU model the estimate was made for.")
    reserved_watt_hours: float = Field(description="Estimate held for the job this period.")
    consumed_watt_hours: float = Field(default=0.0, description="Consumed this period.")
    baseline_watt_hours: float = Field(
        default=0.0, description="The job's total consumption when this period began."
    )
    admitted_time: datetime | None = None


class EnergyBudgetStatus(_Model):
    """What the operator observed and decided about a budget."""

    observed_generation: int | None = None
    period_start_time: datetime | None = None
    consumed_watt_hours: float = Field(default=0.0, description="Consumed this period.")
    settled_watt_hours: float = Field(
        default=0.0, description="Consumed this period by jobs that have since finished."
    )
    # One word per idea: a Reservation's reservedWattHours is its estimate; what the budget's
    # reservations still hold is "held" (heldWattHours, once published as reservedWattHours).
    held_watt_hours: float = Field(
        default=0.0, description="Held for admitted jobs beyond what they consumed so far."
    )
    remaining_watt_hours: float = Field(default=0.0, description="Left for new jobs.")
    overrun_watt_hours: float = Field(
        default=0.0,
        description="Consumed this period beyond what the jobs reserved (a job used more than "
        "its estimate): by this much consumed plus held may exceed the limit.",
    )
    settled_overrun_watt_hours: float = Field(
        default=0.0, description="The part of overrunWattHours of jobs that have since ended."
    )
    over_limit_watt_hours: float = Field(
        default=0.0,
        description="What admitted jobs hold beyond a limit lowered under them (besides the "
        "overrun): they keep running, new jobs wait until it is gone. Consumed plus held "
        "never exceeds the limit by more than overrunWattHours plus this.",
    )
    previous_period_start_time: datetime | None = Field(
        default=None, description="When the period that ended last began."
    )
    previous_period_consumed_watt_hours: float | None = Field(
        default=None,
        description="The final books of the period that ended last: what its jobs consumed in "
        "it, up to its end (also what the operator used while down before the end).",
    )
    admitted_jobs: int = 0
    queued_jobs: int = 0
    reservations: list[Reservation] = Field(
        default_factory=list,
        json_schema_extra=_map_list("jobUid"),
    )
    settled_job_uids: list[str] = Field(
        default_factory=list,
        description="LeptonJobs (by metadata.uid) whose energy is settled in the books: never "
        "admitted again. A UID is dropped once its LeptonJob is deleted.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=_map_list("type"),
    )

    @model_validator(mode="before")
    @classmethod
    def _read_old_held_field(cls, data: Any) -> Any:
        """A status an older operator wrote still reads (heldWattHours was reservedWattHours)."""
        if isinstance(data, Mapping) and OLD_HELD_FIELD in data:
            data = dict(data)
            data["heldWattHours"] = held_watt_hours(data)
            del data[OLD_HELD_FIELD]
        return data


# The budget status' heldWattHours was published as reservedWattHours before issue 15: readers
# accept the old name for one release, so a status an older operator wrote still reads.
OLD_HELD_FIELD = "reservedWattHours"


def held_watt_hours(status: Mapping[str, Any]) -> float:
    """A budget status' heldWattHours, also from a status that still says reservedWattHours.

    The old name wins while it is there: under the new CRD the apiserver defaults a stored old
    status' heldWattHours to 0 on read, until the operator's next status write replaces the
    whole status without the old name."""
    value = status.get(OLD_HELD_FIELD, status.get("heldWattHours"))
    return float(value or 0.0)


class EnergyBudget(_Model):
    """An allowance of watt-hours per period for a team's GPU jobs."""

    api_version: Literal["lepton.dev/v1alpha1"] = "lepton.dev/v1alpha1"
    kind: Literal["EnergyBudget"] = "EnergyBudget"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: EnergyBudgetSpec
    status: EnergyBudgetStatus | None = None


# --------------------------------------------------------------------------- LeptonJob


class Work(_Model):
    """How much work a job does, measured on the reference GPU (the A40)."""

    reference_gpu_seconds: int | None = Field(
        default=None,
        description="Total GPU-seconds of work on the reference GPU (A40), all GPUs together.",
        json_schema_extra=_validations(
            _cel("self > 0", "spec.work.referenceGpuSeconds must be positive, e.g. 3600")
        ),
    )
    duration_seconds: int | None = Field(
        default=None,
        description="Run time of the job on reference GPUs (A40); converted to GPU-seconds.",
        json_schema_extra=_validations(
            _cel("self > 0", "spec.work.durationSeconds must be positive, e.g. 600")
        ),
    )


class Service(_Model):
    """A long-running service: it lives as long as it lives and keeps its GPUs partly busy.

    Its lifetime does not shrink on a faster GPU; a faster GPU only leaves it idler. It is
    placed by the watts it draws at its load, not by energy to completion.
    """

    reference_utilization_percent: int = Field(
        description=(
            "How busy the service keeps one reference GPU (A40) at its expected load, in "
            "percent, per GPU it holds (e.g. 30)."
        ),
        json_schema_extra=_validations(
            _cel(
                "self >= 1 && self <= 100",
                "spec.service.referenceUtilizationPercent must be between 1 and 100 "
                "(percent of one A40 at the expected load, e.g. 30)",
            )
        ),
    )
    lifetime_seconds: int | None = Field(
        default=None,
        description="How long the service runs; left out, it runs until the LeptonJob is deleted.",
        json_schema_extra=_validations(
            _cel(
                "self >= 60",
                "spec.service.lifetimeSeconds must be at least 60, or left out for a service "
                "that runs until deleted",
            )
        ),
    )


class Redundancy(_Model):
    """How a job's replicas are spread for resilience."""

    spread_across: str | None = Field(
        default=None, description="A node label (topology key), e.g. topology.kubernetes.io/zone."
    )
    max_replicas_per_domain: int | None = Field(
        default=None,
        json_schema_extra=_validations(
            _cel(
                "self >= 1",
                "spec.redundancy.maxReplicasPerDomain must be at least 1, or left out",
            )
        ),
    )
    spares: int = Field(
        default=0,
        description="Extra replicas held ready for bursts and failures (recorded; not yet run).",
        json_schema_extra=_validations(
            _cel("self >= 0 && self <= 16", "spec.redundancy.spares must be between 0 and 16")
        ),
    )


class PowerCap(_Model):
    """The GPU power limit a job runs under."""

    mode: PowerCapMode = Field(
        default=PowerCapMode.AUTO,
        description="Auto: the profile's energy-optimal limit. None: no cap. Watts: spec.watts.",
    )
    watts: int | None = Field(
        default=None,
        json_schema_extra=_validations(
            _cel("self >= 50 && self <= 1000", "spec.powerCap.watts must be between 50 and 1000")
        ),
    )


class LeptonJobSpec(_Model):
    """A GPU job admitted against an EnergyBudget and placed by Lepton's scheduler."""

    budget_name: str = Field(
        description="The EnergyBudget in this namespace that pays for the job.",
        max_length=63,
        json_schema_extra=_validations(
            _cel(
                "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                "spec.budgetName must be the name of an EnergyBudget in this namespace "
                "(lower-case letters, digits and '-')",
            ),
            _cel(
                "self == oldSelf",
                "spec.budgetName cannot be changed: the budget holds the job's reservation and "
                "books; delete the LeptonJob and create it again with the new spec.budgetName",
            ),
        ),
    )
    template: dict[str, Any] = Field(
        description="The pod template (a core/v1 PodTemplateSpec) each replica runs.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    replicas: int = Field(
        default=1,
        json_schema_extra=_validations(
            _cel("self >= 1 && self <= 1000", "spec.replicas must be between 1 and 1000")
        ),
    )
    gpus_per_replica: int = Field(
        default=1,
        json_schema_extra=_validations(
            _cel(
                f"self >= 1 && self <= {MAX_GPUS_PER_REPLICA}",
                f"spec.gpusPerReplica must be between 1 and {MAX_GPUS_PER_REPLICA} "
                "(no node has more GPUs); split the job into more replicas",
            )
        ),
    )
    gpu_models: list[GpuModel] = Field(
        default_factory=list,
        description="Acceptable GPU models; empty means any. One of: " + ", ".join(GPU_MODELS),
        json_schema_extra={"x-kubernetes-list-type": "set", "maxItems": len(GPU_MODELS)},
    )
    energy_policy: EnergyPolicy = Field(default=EnergyPolicy.BALANCED)
    work: Work | None = Field(
        default=None,
        description="A batch job's work. Set exactly one of work and service.",
        json_schema_extra=_validations(
            _cel(
                "has(self.referenceGpuSeconds) != has(self.durationSeconds)",
                "spec.work must set exactly one of referenceGpuSeconds or durationSeconds",
            )
        ),
    )
    service: Service | None = Field(
        default=None,
        description="A long-running service: demand, lifetime. Set exactly one of work, service.",
    )
    deadline_time: datetime | None = None
    redundancy: Redundancy | None = None
    power_cap: PowerCap | None = Field(
        default=None,
        json_schema_extra=_validations(
            _cel(
                "(self.mode == 'Watts') == has(self.watts)",
                "spec.powerCap.watts must be set when spec.powerCap.mode is Watts, and only then",
            )
        ),
    )

    def total_gpus(self) -> int:
        """GPUs the job runs on at once."""
        return self.replicas * self.gpus_per_replica

    @property
    def workload_kind(self) -> WorkloadKind:
        """Batch when spec.work is set, Service when spec.service is."""
        return WorkloadKind.SERVICE if self.service is not None else WorkloadKind.BATCH

    def work_reference_gpu_hours(self) -> float:
        """A batch job's work in GPU-hours on the reference GPU (0 for a service)."""
        if self.work is None:
            return 0.0
        if self.work.reference_gpu_seconds is not None:
            return self.work.reference_gpu_seconds / 3600.0
        duration = self.work.duration_seconds or 0
        return duration * self.total_gpus() / 3600.0

    def power_cap_hint(self) -> str:
        """The power cap as the scheduler hint writes it: "Auto", "None" or watts."""
        cap = self.power_cap or PowerCap()
        if cap.mode is PowerCapMode.WATTS:
            return str(cap.watts)
        return cap.mode.value


class Placement(_Model):
    """Where one pod of the job runs."""

    pod: str
    node: str = ""
    gpu_model: str = ""


class Phase(_Model):
    """One phase of the job's work as the Lepton SDK metered it, summed over the job's pods."""

    name: str
    count: int = Field(default=0, description="How many times the phase ran.")
    duration_seconds: float = 0.0
    energy_watt_hours: float = 0.0
    estimated: bool = Field(
        default=False, description="True when some of the energy came from the model, not a meter."
    )


class RunInterval(_Model):
    """A span of time during which some of the job's pods ran (containers started, not ended)."""

    start: datetime
    end: datetime


class LeptonJobStatus(_Model):
    """What the operator observed and decided about a LeptonJob."""

    observed_generation: int | None = None
    state: LeptonJobState | None = None
    job_name: str | None = Field(default=None, description="The child batch/v1 Job.")
    gpus: int | None = Field(default=None, description="GPUs the job runs on at once.")
    gpu_model: str | None = Field(
        default=None, description="The GPU model the energy estimate was made for."
    )
    estimated_watt_hours: float | None = Field(
        default=None, description="Model estimate reserved in the budget at admission."
    )
    consumed_watt_hours: float | None = None
    consumption_source: ConsumptionSource | None = None
    power_limit_watts: int | None = Field(
        default=None, description="A lower GPU power limit decided by the budget (CapPower)."
    )
    admitted_time: datetime | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    placements: list[Placement] = Field(default_factory=list)
    run_intervals: list[RunInterval] = Field(
        default_factory=list,
        description="When the job's pods ran (the union over its pods, kept across suspend and "
        "resume): without a meter the job is charged its estimated power for this time.",
    )
    phases: list[Phase] = Field(
        default_factory=list,
        description="Per-phase energy reported by the Lepton SDK inside the job's pods "
        f"(annotation {ANNOTATION_PHASES}).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=_map_list("type"),
    )


class LeptonJob(_Model):
    """A GPU job admitted against an EnergyBudget and placed by Lepton's scheduler."""

    api_version: Literal["lepton.dev/v1alpha1"] = "lepton.dev/v1alpha1"
    kind: Literal["LeptonJob"] = "LeptonJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: LeptonJobSpec = Field(
        json_schema_extra=_validations(
            _cel(
                "has(self.work) != has(self.service)",
                "spec.work or spec.service: set exactly one — spec.work for a batch job "
                "(referenceGpuSeconds or durationSeconds), spec.service for a long-running "
                "service (referenceUtilizationPercent)",
            ),
            _cel(
                "!has(self.service) || !has(self.deadlineTime)",
                "spec.deadlineTime applies to batch work only: a service runs for its "
                "lifetimeSeconds, so remove deadlineTime",
            ),
        )
    )
    status: LeptonJobStatus | None = None
