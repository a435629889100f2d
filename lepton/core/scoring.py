"""Where a LeptonJob pod should run: the filter and the score, in one place.

The Lepton scheduler and the trace-driven simulator both call
:func:`filter_nodes` and :func:`score_nodes`, so this module takes plain
dataclasses (no HTTP, no Kubernetes types). The formulas run over columns
(:class:`CandidateTable`, numpy arrays) so that 5,000 candidates cost a few
milliseconds; a list of :class:`CandidateNode` is turned into a table first.

Two kinds of workload (:class:`lepton.core.hints.WorkloadKind`), two energy models.

**Batch.** For a pod needing ``g`` GPUs of a job of ``r`` replicas with work ``W``
(reference GPU-hours, the whole job), on a node with GPU model ``m`` under power
limit ``cap`` (from the job's ``powerCap``):

* ``T = W / (r · g · speed(m, cap)) · slowdown``, ``slowdown = 1 + contention_slowdown · excess``,
  ``excess = max(0, u - target) / (1 - target)`` for the node's predicted GPU
  utilisation ``u`` over the job's horizon (a loaded host slows a job: shared
  PCIe, CPU, memory bandwidth and power headroom);
* dynamic energy ``g · s · (P_busy(m, cap) - P_idle(m)) · T``: what the job adds
  (``s`` ≤ 1 the share of each GPU it holds, as for a service: a pod on a quarter of
  a time-sliced GPU adds a quarter of its active draw, as the simulator charges it);
* marginal idle energy ``P_node_idle · T`` if the node is empty (placing there
  wakes it), else 0 (a busy node pays its idle draw anyway: consolidation saves);
* terms relative to the best candidate: ``energy = E_min / E``, ``time = T_min / T``.

**Service.** A service with demand ``u_ref`` (its utilisation of one reference GPU at
its expected load) holding ``g`` GPUs (each a share ``s`` ≤ 1 of a GPU: its
``gpu-milli``, at most one replica of a time-sliced node's board):

* ``u_m = u_ref / speed(m, cap)``; a node where ``u_m > target · s`` fails the filter
  (the GPU cannot carry the load below the target utilisation);
* power ``g · (s · P_idle(m) + (P_busy(m, cap) - P_idle(m)) · u_m)``: the idle draw of
  what it holds plus the active draw of its load, plus the node's idle draw
  ``P_node_idle`` if placing there wakes an empty node. A faster GPU does not
  shorten a service; a big idle GPU costs a small service dearly;
* terms: ``energy = W_min / W`` (watts at its load), ``time = u_min / u`` (headroom:
  the less busy its GPU, the lower its latency).

For both kinds:

* ``score = round(10 · (w_e · energy + w_t · time) · (1 - load_penalty · excess) · spread)``,
  ``(w_e, w_t)`` from the energy policy, moved towards energy by budget pressure;
  ``spread`` < 1 for a node in a domain already holding more of the job's pods
  than the emptiest candidate domain.

Filters: GPU model acceptable, enough free GPUs, redundancy (``maxReplicasPerDomain``
over ``spreadAcross``; the job's placed pods, spares included, count), a service's
load below the target, and a batch job's deadline: a node that cannot finish in
time fails, unless no candidate can, in which case all pass and the score ranks by
completion time alone. A pod that asks for no GPU is not Lepton's to rank: every
node gets the same score, and kube-scheduler's own plugins place it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, overload

import numpy as np

from .energy import (
    HOST_IDLE_BASE_WATTS,
    HOST_IDLE_WATTS_PER_GPU_SLOT,
    SECONDS_PER_HOUR,
    chosen_power_limit_watts,
    service_utilization,
)
from .hints import EnergyPolicy, JobHints, WorkloadKind
from .names import MAX_SCORE
from .profiles import get_profile, is_known

# A million reference GPU-hours (over a century on a thousand GPUs) bounds any real job.
MAX_WORK_REFERENCE_GPU_HOURS = 1e6

# (energy weight, time weight) per policy. Performance still breaks ties on energy.
POLICY_WEIGHTS: Mapping[EnergyPolicy, tuple[float, float]] = {
    EnergyPolicy.PERFORMANCE: (0.1, 0.9),
    EnergyPolicy.BALANCED: (0.5, 0.5),
    EnergyPolicy.EFFICIENCY: (0.9, 0.1),
}

Floats = np.ndarray[Any, np.dtype[np.float64]]
Ints = np.ndarray[Any, np.dtype[np.int64]]
Bools = np.ndarray[Any, np.dtype[np.bool_]]


@dataclass(frozen=True)
class ScoringConfig:
    """Tunable constants of the score; defaults are the documented design choices."""

    # Utilisation above which a node counts as contended (Trimaran's TargetLoadPacking
    # uses a target of this order; we take 70 %).
    load_target: float = 0.7
    # assumed: a fully loaded node slows a job by up to 50 %.
    contention_slowdown: float = 0.5
    # how much of the score a fully loaded node loses beyond its slowdown
    load_penalty: float = 0.5
    # score factor for a node in a domain already holding more of the job's pods than the
    # emptiest candidate domain (spreadAcross without a maximum)
    crowded_domain_factor: float = 0.8
    # The utilisation a service may keep its GPU at, at most (headroom for bursts and
    # latency; inference serving is commonly sized for 70-80 % of a GPU's throughput).
    service_target_utilization: float = 0.8


DEFAULT_CONFIG = ScoringConfig()


@dataclass(frozen=True, slots=True)
class CandidateNode:
    """A node as the scorer sees it."""

    name: str
    gpu_model: str  # short name or nvidia.com/gpu.product value
    free_gpus: int
    total_gpus: int
    labels: Mapping[str, str] = field(default_factory=dict)
    empty: bool = False  # no pods keep it awake: placing here wakes it
    predicted_utilization: float = 0.0  # 0..1, mean GPU utilisation over the job's horizon
    # The host's idle draw without its GPUs; None: the sourced default for its GPU count
    # (lepton.core.energy.host_idle_watts), or the node's lepton.dev/host-idle-watts label.
    host_idle_watts: float | None = None
    # The share of a board one advertised nvidia.com/gpu is here: 1/replicas on a
    # time-sliced node (GPU feature discovery's nvidia.com/gpu.replicas), else 1.
    gpu_share: float = 1.0

    def domain(self, topology_key: str) -> str | None:
        """The node's value of a topology label (its zone, rack …), or None."""
        return self.labels.get(topology_key)


@dataclass(frozen=True, eq=False)
class CandidateTable(Sequence[CandidateNode]):
    """Candidates as columns; also a read-only sequence of :class:`CandidateNode`."""

    names: Sequence[str]
    models: Sequence[str]  # distinct GPU models
    model_index: Ints  # per node, into ``models``
    free_gpus: Ints
    total_gpus: Ints
    empty: Bools
    predicted_utilization: Floats
    labels: Sequence[Mapping[str, str]]
    # Optional, precomputed per topology key: (distinct values, per-node index or -1).
    domains: Mapping[str, tuple[Sequence[str], Ints]] = field(default_factory=dict)
    # Per node; NaN: the default for its GPU count. None: every node at the default.
    host_idle_watts: Floats | None = None
    # Per node: the share of a board one advertised GPU is (CandidateNode.gpu_share). None: 1.
    gpu_shares: Floats | None = None

    def pod_share(self, requested: float) -> Floats:
        """The share of each GPU a pod holds per node: what it asks for, at most one replica."""
        if self.gpu_shares is None:
            return np.full(len(self.names), requested, dtype=np.float64)
        return np.minimum(requested, self.gpu_shares)

    def host_idle(self) -> Floats:
        """Each node's host idle draw (watts, GPUs excluded), defaults filled in."""
        default = HOST_IDLE_BASE_WATTS + HOST_IDLE_WATTS_PER_GPU_SLOT * self.total_gpus
        if self.host_idle_watts is None:
            return default.astype(np.float64)
        return np.where(np.isnan(self.host_idle_watts), default, self.host_idle_watts)

    def domain_ids(self, key: str) -> tuple[Sequence[str], Ints]:
        """Each node's domain of ``key`` as an index into the distinct values (-1: no label)."""
        if key in self.domains:
            return self.domains[key]
        values: dict[str, int] = {}
        ids = [
            -1 if (v := labels.get(key)) is None else values.setdefault(v, len(values))
            for labels in self.labels
        ]
        return list(values), np.array(ids, dtype=np.int64)

    @classmethod
    def from_nodes(cls, nodes: Iterable[CandidateNode]) -> CandidateTable:
        nodes = list(nodes)
        models: dict[str, int] = {}
        index = [models.setdefault(n.gpu_model, len(models)) for n in nodes]
        return cls(
            names=[n.name for n in nodes],
            models=list(models),
            model_index=np.array(index, dtype=np.int64),
            free_gpus=np.array([n.free_gpus for n in nodes], dtype=np.int64),
            total_gpus=np.array([n.total_gpus for n in nodes], dtype=np.int64),
            empty=np.array([n.empty for n in nodes], dtype=bool),
            predicted_utilization=np.array(
                [n.predicted_utilization for n in nodes], dtype=np.float64
            ),
            labels=[n.labels for n in nodes],
            host_idle_watts=np.array(
                [math.nan if n.host_idle_watts is None else n.host_idle_watts for n in nodes],
                dtype=np.float64,
            ),
            gpu_shares=np.array([n.gpu_share for n in nodes], dtype=np.float64),
        )

    def take(self, rows: Ints | Bools) -> CandidateTable:
        """The rows selected by an index or mask array, in order."""
        if rows.dtype == np.bool_ and len(rows) == len(self) and bool(rows.all()):
            return self  # read-only: a filter that keeps every node copies nothing
        picked = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        return CandidateTable(
            names=[self.names[i] for i in picked.tolist()],
            models=self.models,
            model_index=self.model_index[picked],
            free_gpus=self.free_gpus[picked],
            total_gpus=self.total_gpus[picked],
            empty=self.empty[picked],
            predicted_utilization=self.predicted_utilization[picked],
            labels=[self.labels[i] for i in picked.tolist()],
            domains={k: (values, ids[picked]) for k, (values, ids) in self.domains.items()},
            host_idle_watts=None if self.host_idle_watts is None else self.host_idle_watts[picked],
            gpu_shares=None if self.gpu_shares is None else self.gpu_shares[picked],
        )

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> CandidateNode: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[CandidateNode]: ...
    def __getitem__(self, i: int | slice) -> CandidateNode | Sequence[CandidateNode]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return CandidateNode(
            name=self.names[i],
            gpu_model=self.models[int(self.model_index[i])],
            free_gpus=int(self.free_gpus[i]),
            total_gpus=int(self.total_gpus[i]),
            labels=self.labels[i],
            empty=bool(self.empty[i]),
            predicted_utilization=float(self.predicted_utilization[i]),
            host_idle_watts=None
            if self.host_idle_watts is None or math.isnan(self.host_idle_watts[i])
            else float(self.host_idle_watts[i]),
            gpu_share=1.0 if self.gpu_shares is None else float(self.gpu_shares[i]),
        )

    def __iter__(self) -> Iterator[CandidateNode]:
        return (self[i] for i in range(len(self)))


def as_table(nodes: Sequence[CandidateNode]) -> CandidateTable:
    return nodes if isinstance(nodes, CandidateTable) else CandidateTable.from_nodes(nodes)


@dataclass(frozen=True, slots=True)
class NodeTerms:
    """Every term that gave one node its score.

    Batch and service pods share the columns; ``workload_kind`` says which model
    made them, and :meth:`as_dict` shows only that model's terms.
    """

    node: str
    gpu_model: str
    profile: str
    power_limit_watts: float
    predicted_utilization: float
    contention_slowdown: float
    duration_seconds: float
    dynamic_watt_hours: float
    idle_watt_hours: float
    energy_watt_hours: float
    meets_deadline: bool | None
    energy_term: float
    time_term: float
    load_factor: float
    spread_factor: float
    score: int
    workload_kind: WorkloadKind = WorkloadKind.BATCH
    gpu_utilization: float = 1.0  # a service's u_m on this model; 1 for batch
    held_idle_watts: float = 0.0  # service: idle draw of the GPUs it holds
    gpu_share: float = 1.0  # the share of each GPU the pod holds on this node
    active_watts: float = 0.0  # service: (P_busy - P_idle) · u_m over its GPUs
    wake_watts: float = 0.0  # the node's idle draw if placing here wakes it
    power_watts: float = 0.0  # service: what it is ranked by

    def summary(self) -> str:
        """One line with this kind's terms, for a human reading ``kubectl describe pod``."""
        head = f"{self.node} score {self.score}: {self.profile} at {self.power_limit_watts:.0f} W"
        if self.workload_kind is WorkloadKind.SERVICE:
            return (
                f"{head}, service at {self.gpu_utilization:.0%} of the GPU, "
                f"{self.power_watts:.1f} W (held idle {self.held_idle_watts:.1f} + active "
                f"{self.active_watts:.1f} + wake {self.wake_watts:.1f}), predicted load "
                f"{self.predicted_utilization:.2f}"
            )
        return (
            f"{head}, {self.energy_watt_hours:.1f} Wh (dynamic {self.dynamic_watt_hours:.1f} + "
            f"idle {self.idle_watt_hours:.1f}), {self.duration_seconds / 3600:.2f} h, predicted "
            f"load {self.predicted_utilization:.2f}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, camelCase like the API."""
        common = {
            "node": self.node,
            "workloadKind": str(self.workload_kind),
            "gpuModel": self.gpu_model,
            "profile": self.profile,
            "score": self.score,
            "powerLimitWatts": round(self.power_limit_watts, 1),
            "predictedUtilization": round(self.predicted_utilization, 3),
        }
        if self.workload_kind is WorkloadKind.SERVICE:
            return common | {
                "gpuUtilization": round(self.gpu_utilization, 3),
                "gpuShare": round(self.gpu_share, 3),
                "heldIdleWatts": round(self.held_idle_watts, 1),
                "activeWatts": round(self.active_watts, 1),
                "wakeWatts": round(self.wake_watts, 1),
                "powerWatts": round(self.power_watts, 1),
                "energyTerm": round(self.energy_term, 3),
                "headroomTerm": round(self.time_term, 3),
                "loadFactor": round(self.load_factor, 3),
                "spreadFactor": round(self.spread_factor, 3),
            }
        return common | {
            "contentionSlowdown": round(self.contention_slowdown, 3),
            "durationSeconds": round(self.duration_seconds, 1),
            "dynamicWattHours": round(self.dynamic_watt_hours, 2),
            "idleWattHours": round(self.idle_watt_hours, 2),
            "energyWattHours": round(self.energy_watt_hours, 2),
            "meetsDeadline": self.meets_deadline,
            "energyTerm": round(self.energy_term, 3),
            "timeTerm": round(self.time_term, 3),
            "loadFactor": round(self.load_factor, 3),
            "spreadFactor": round(self.spread_factor, 3),
        }


@dataclass(frozen=True, eq=False)
class _Terms:
    """The per-node columns of one scoring pass (what an explanation is made of).

    ``cost`` is what the pod is ranked by: watt-hours to completion for batch,
    watts at its load for a service. ``pace`` is what the time term compares:
    seconds to completion for batch, the GPU's utilisation for a service.
    """

    table: CandidateTable
    kind: WorkloadKind
    profiles: Sequence[str]  # per distinct model
    power_limit_watts: Floats  # per distinct model
    gpu_utilization: Floats  # per distinct model
    predicted_utilization: Floats
    slowdown: Floats
    seconds: Floats
    dynamic_wh: Floats
    idle_wh: Floats
    held_idle_watts: Floats
    gpu_share: Floats  # per node
    active_watts: Floats
    wake_watts: Floats
    cost: Floats
    pace: Floats
    meets: Bools | None
    load_factor: Floats
    energy_term: Floats = field(default_factory=lambda: np.empty(0))
    time_term: Floats = field(default_factory=lambda: np.empty(0))
    spread: Floats = field(default_factory=lambda: np.empty(0))
    scores: Ints = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def row(self, i: int) -> NodeTerms:
        m = int(self.table.model_index[i])
        return NodeTerms(
            node=self.table.names[i],
            gpu_model=self.table.models[m],
            profile=self.profiles[m],
            power_limit_watts=float(self.power_limit_watts[m]),
            predicted_utilization=float(self.predicted_utilization[i]),
            contention_slowdown=float(self.slowdown[i]),
            duration_seconds=float(self.seconds[i]),
            dynamic_watt_hours=float(self.dynamic_wh[i]),
            idle_watt_hours=float(self.idle_wh[i]),
            energy_watt_hours=float(self.dynamic_wh[i] + self.idle_wh[i]),
            meets_deadline=None if self.meets is None else bool(self.meets[i]),
            energy_term=float(self.energy_term[i]),
            time_term=float(self.time_term[i]),
            load_factor=float(self.load_factor[i]),
            spread_factor=float(self.spread[i]),
            score=int(self.scores[i]),
            workload_kind=self.kind,
            gpu_utilization=float(self.gpu_utilization[m]),
            held_idle_watts=float(self.held_idle_watts[i]),
            gpu_share=float(self.gpu_share[i]),
            active_watts=float(self.active_watts[i]),
            wake_watts=float(self.wake_watts[i]),
            power_watts=float(self.cost[i]) if self.kind is WorkloadKind.SERVICE else 0.0,
        )

    def ranking(self) -> Ints:
        """Row order, best first: score, then the lower cost, then name."""
        return np.lexsort((np.array(self.table.names, dtype=object), self.cost, -self.scores))


@dataclass(frozen=True)
class Explanation:
    """Why each node got its score: the weights and each node's terms, best first."""

    job_name: str
    energy_policy: str
    energy_weight: float
    time_weight: float
    budget_pressure: float
    terms: _Terms | None = None
    notes: tuple[str, ...] = ()
    workload_kind: WorkloadKind = WorkloadKind.BATCH
    reference_utilization_percent: float | None = None  # a service's demand

    def top(self, n: int = 3) -> tuple[NodeTerms, ...]:
        """The ``n`` best-scored nodes."""
        if self.terms is None:
            return ()
        return tuple(self.terms.row(int(i)) for i in self.terms.ranking()[:n])

    @property
    def nodes(self) -> tuple[NodeTerms, ...]:
        """Every node's terms, best first (built on demand: it is rarely read)."""
        return self.top(len(self.terms.table) if self.terms is not None else 0)

    def summary(self) -> str:
        """The kind, policy and weights in one line."""
        demand = (
            f" at {self.reference_utilization_percent:g} % of an A40"
            if self.reference_utilization_percent is not None
            else ""
        )
        return (
            f"Lepton {self.energy_policy} {self.workload_kind}{demand} (energy weight "
            f"{self.energy_weight:.2f}, budget pressure {self.budget_pressure:.2f})"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out: dict[str, Any] = {
            "job": self.job_name,
            "workloadKind": str(self.workload_kind),
            "energyPolicy": self.energy_policy,
            "energyWeight": round(self.energy_weight, 3),
            "timeWeight": round(self.time_weight, 3),
            "budgetPressure": round(self.budget_pressure, 3),
        }
        if self.reference_utilization_percent is not None:
            out["referenceUtilizationPercent"] = round(self.reference_utilization_percent, 2)
        return out | {"nodes": [t.as_dict() for t in self.nodes], "notes": list(self.notes)}


class FailureKind(StrEnum):
    """Whether preempting pods could cure a node's filter failure (the extender protocol's
    ``FailedNodes`` against ``FailedAndUnresolvableNodes``)."""

    RESOLVABLE = "resolvable"  # too few free GPUs: evicting pods frees them
    UNRESOLVABLE = "unresolvable"  # GPU model, labels, redundancy, load, deadline


@dataclass(frozen=True)
class FilterResult:
    """The nodes a pod may run on, and why each of the others may not.

    ``failed`` is each failed node's message (text only); ``kinds`` its
    :class:`FailureKind`, which decides what the caller does with it.
    """

    passed: Sequence[CandidateNode]
    failed: Mapping[str, str]
    notes: tuple[str, ...] = ()
    kinds: Mapping[str, FailureKind] = field(default_factory=dict)

    def failed_of(self, kind: FailureKind) -> dict[str, str]:
        """The failed nodes of one kind, with their messages."""
        return {n: m for n, m in self.failed.items() if self.kinds.get(n) == kind}

    @property
    def passed_names(self) -> list[str]:
        if isinstance(self.passed, CandidateTable):
            return list(self.passed.names)
        return [n.name for n in self.passed]


@dataclass(frozen=True)
class ScoreResult:
    """Integer scores 0..10 per node name, with the explanation."""

    scores: Mapping[str, int]
    explanation: Explanation
    score_list: Sequence[int] = ()  # in the order of the candidates given


# --------------------------------------------------------------------------- helpers


def policy_weights(policy: EnergyPolicy, budget_pressure: float) -> tuple[float, float]:
    """(energy, time) weights: the policy's, shifted towards energy as the budget runs out."""
    w_energy, _ = POLICY_WEIGHTS.get(policy, POLICY_WEIGHTS[EnergyPolicy.BALANCED])
    pressure = 0.0 if math.isnan(budget_pressure) else min(1.0, max(0.0, budget_pressure))
    w_energy = w_energy + (1.0 - w_energy) * pressure
    return w_energy, 1.0 - w_energy


def replicas_per_domain(
    node_names_of_placed_pods: Iterable[str], node_labels: Mapping[str, Mapping[str, str]], key: str
) -> dict[str, int]:
    """How many of a job's placed pods (replicas and spares) sit in each domain of ``key``."""
    counts: dict[str, int] = {}
    for node in node_names_of_placed_pods:
        domain = node_labels.get(node, {}).get(key)
        if domain is not None:
            counts[domain] = counts.get(domain, 0) + 1
    return counts


def _base_model(profile_model: str) -> str:
    """A MIG slice's board model (``A100-MIG-3g`` → ``A100``); others unchanged."""
    return profile_model.split("-MIG-", 1)[0]


def _model_accepted(node_model: str, accepted: tuple[str, ...]) -> bool:
    if not accepted:
        return True
    node_profile = get_profile(node_model) if is_known(node_model) else None
    for wanted in accepted:
        if wanted.lower() == node_model.lower():
            return True
        if (
            node_profile is not None
            and is_known(wanted)
            and _base_model(get_profile(wanted).model) == _base_model(node_profile.model)
        ):
            return True
    return False


def _work_hours(hints: JobHints) -> float:
    """The job's work, made safe to compute with (the API bounds it; a stray hint must not)."""
    work = hints.work_reference_gpu_hours
    if not math.isfinite(work) or work < 0:
        return 0.0
    return min(work, MAX_WORK_REFERENCE_GPU_HOURS)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def asks_for_gpus(hints: JobHints) -> bool:
    """Whether Lepton ranks this pod: a pod that holds no GPU is left to kube-scheduler."""
    return hints.gpus_per_replica > 0


def _terms(table: CandidateTable, hints: JobHints, now: datetime, config: ScoringConfig) -> _Terms:
    gpus = max(1, hints.gpus_per_replica)
    share = table.pod_share(hints.gpu_share)  # per node
    service = hints.is_service
    # The whole job's work runs on all its replicas at once.
    work_seconds = _work_hours(hints) * SECONDS_PER_HOUR / (gpus * max(1, hints.replicas))
    profiles, limits, base_seconds, active_watts, gpu_idle, util = [], [], [], [], [], []
    for model in table.models:  # a handful of distinct models: plain Python
        profile = get_profile(model)
        try:
            limit = chosen_power_limit_watts(profile, hints.power_cap)
        except ValueError:
            limit = chosen_power_limit_watts(profile, "Auto")
        profiles.append(profile.model)
        limits.append(limit)
        base_seconds.append(work_seconds / profile.speed_at(limit))
        active_watts.append(profile.active_power_watts(1.0, limit) - profile.idle_watts)
        gpu_idle.append(profile.idle_watts)
        util.append(
            service_utilization(profile, hints.reference_utilization_percent, limit)
            if service
            else 1.0
        )
    m = table.model_index
    utilization = np.clip(np.nan_to_num(table.predicted_utilization, nan=0.0), 0.0, 1.0)
    excess = np.maximum(0.0, utilization - config.load_target) / (1.0 - config.load_target)
    slowdown = 1.0 + config.contention_slowdown * excess
    idle_per_gpu = np.asarray(gpu_idle, dtype=np.float64)[m]
    active_per_gpu = np.asarray(active_watts, dtype=np.float64)[m]
    # energy.node_idle_watts, per node: the host plus every GPU idle
    node_idle = table.host_idle() + table.total_gpus * idle_per_gpu
    wake = np.where(table.empty, node_idle, 0.0)
    u_m = np.asarray(util, dtype=np.float64)
    zeros = np.zeros(len(table))
    meets = None
    if service:
        # energy.service_power_watts, per node: what it holds idles, its load is active
        held = gpus * share * idle_per_gpu
        active = gpus * active_per_gpu * np.minimum(1.0, u_m[m])
        lifetime = hints.lifetime_seconds
        seconds = np.full(len(table), math.nan if lifetime is None else lifetime)
        life_hours = 1.0 if lifetime is None else lifetime / SECONDS_PER_HOUR
        cost = held + active + wake
        return _Terms(
            table=table,
            kind=WorkloadKind.SERVICE,
            profiles=profiles,
            power_limit_watts=np.asarray(limits, dtype=np.float64),
            gpu_utilization=u_m,
            predicted_utilization=utilization,
            slowdown=slowdown,
            seconds=seconds,
            dynamic_wh=active * life_hours,
            idle_wh=(held + wake) * life_hours,
            held_idle_watts=held,
            gpu_share=share,
            active_watts=active,
            wake_watts=wake,
            cost=cost,
            pace=u_m[m],
            meets=None,
            load_factor=1.0 - config.load_penalty * excess,
        )
    seconds = np.asarray(base_seconds, dtype=np.float64)[m] * slowdown
    hours = seconds / SECONDS_PER_HOUR
    # a pod on a share of a GPU (time-slicing, MPS) adds its share of the active draw
    dynamic = gpus * share * active_per_gpu * hours
    idle = wake * hours
    if hints.deadline_time is not None:
        meets = seconds <= (_aware(hints.deadline_time) - _aware(now)).total_seconds()
    return _Terms(
        table=table,
        kind=WorkloadKind.BATCH,
        profiles=profiles,
        power_limit_watts=np.asarray(limits, dtype=np.float64),
        gpu_utilization=u_m,
        predicted_utilization=utilization,
        slowdown=slowdown,
        seconds=seconds,
        dynamic_wh=dynamic,
        idle_wh=idle,
        held_idle_watts=zeros,
        gpu_share=share,
        active_watts=zeros,
        wake_watts=wake,
        cost=dynamic + idle,
        pace=seconds,
        meets=meets,
        load_factor=1.0 - config.load_penalty * excess,
    )


# --------------------------------------------------------------------------- filter


def filter_nodes(
    nodes: Sequence[CandidateNode],
    hints: JobHints,
    placed_per_domain: Mapping[str, int] | None = None,
    now: datetime | None = None,
    config: ScoringConfig = DEFAULT_CONFIG,
) -> FilterResult:
    """The nodes a pod of this job may run on; a reason for each node that may not.

    ``placed_per_domain`` counts the job's other pods already placed (replicas
    and spares alike) per value of ``hints.spread_across``.
    """
    table = as_table(nodes)
    now = now or datetime.now(UTC)
    placed = placed_per_domain or {}
    failed: dict[str, str] = {}
    ok = np.ones(len(table), dtype=bool)
    names = table.names

    accepted = np.array([_model_accepted(m, hints.gpu_models) for m in table.models], dtype=bool)
    wrong_model = ~accepted[table.model_index] if len(table.models) else ok & False
    for i in np.flatnonzero(wrong_model).tolist():
        model = table.models[int(table.model_index[i])]
        failed[names[i]] = (
            f"GPU model {model or 'none'} is not among the job's gpuModels "
            f"({', '.join(hints.gpu_models)})"
        )
    ok &= ~wrong_model
    short = ok & (table.free_gpus < hints.gpus_per_replica)
    resolvable = {names[i] for i in np.flatnonzero(short).tolist()}
    for i in np.flatnonzero(short).tolist():
        failed[names[i]] = f"{table.free_gpus[i]} free GPUs, the pod needs {hints.gpus_per_replica}"
    ok &= ~short

    key, limit = hints.spread_across, hints.max_replicas_per_domain
    if key:
        values, ids = table.domain_ids(key)
        unlabelled = ok & (ids < 0)
        for i in np.flatnonzero(unlabelled).tolist():
            failed[names[i]] = f"no {key} label: cannot honour spreadAcross"
        ok &= ~unlabelled
        if limit is not None and values:
            held = np.array([placed.get(v, 0) for v in values], dtype=np.int64)
            full = ok & (held[np.maximum(ids, 0)] >= limit)
            for i in np.flatnonzero(full).tolist():
                domain = values[int(ids[i])]
                failed[names[i]] = (
                    f"{key}={domain} already holds {placed.get(domain, 0)} of the job's "
                    f"replicas and spares (maxReplicasPerDomain {limit})"
                )
            ok &= ~full

    notes: list[str] = []
    if hints.is_service and asks_for_gpus(hints) and ok.any():
        terms = _terms(table, hints, now, config)
        shares = table.pod_share(hints.gpu_share)
        ceilings = config.service_target_utilization * shares
        heavy = ok & (terms.gpu_utilization[table.model_index] > ceilings + 1e-12)
        for i in np.flatnonzero(heavy).tolist():
            m = int(table.model_index[i])
            share, ceiling = float(shares[i]), float(ceilings[i])
            failed[names[i]] = (
                f"a service at {hints.reference_utilization_percent:g} % of an A40 would keep "
                f"this {terms.profiles[m]} {terms.gpu_utilization[m]:.0%} busy at "
                f"{terms.power_limit_watts[m]:g} W, above the target "
                + (
                    f"{ceiling:.0%} of the GPU ({config.service_target_utilization:.0%} of its "
                    f"{share:g} GPU share)"
                    if share < 1
                    else f"{ceiling:.0%}"
                )
                + ": choose a faster GPU model or lower the demand"
            )
        ok &= ~heavy
    if not hints.is_service and hints.deadline_time is not None and ok.any():
        terms = _terms(table, hints, now, config)
        assert terms.meets is not None
        if (terms.meets & ok).any():
            late = ok & ~terms.meets
            for i in np.flatnonzero(late).tolist():
                failed[names[i]] = (
                    f"would finish in {terms.seconds[i]:.0f} s on "
                    f"{terms.profiles[int(table.model_index[i])]}, after the deadline "
                    f"{hints.deadline_time.isoformat()}"
                )
            ok &= ~late
        else:
            notes.append("no candidate meets the deadline: all kept, ranked by completion time")
    passed = (
        table.take(ok)
        if isinstance(nodes, CandidateTable)
        else tuple(n for n, keep in zip(nodes, ok, strict=True) if keep)
    )
    kinds = {
        name: FailureKind.RESOLVABLE if name in resolvable else FailureKind.UNRESOLVABLE
        for name in failed
    }
    return FilterResult(passed=passed, failed=failed, notes=tuple(notes), kinds=kinds)


# --------------------------------------------------------------------------- score


def _relative(best: float, values: Floats) -> Floats:
    """best / value, 1 where the value is 0, 0 where it is not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(values > 0, best / values, 1.0)
    return np.where(np.isfinite(ratio), ratio, 0.0)


def score_nodes(
    nodes: Sequence[CandidateNode],
    hints: JobHints,
    placed_per_domain: Mapping[str, int] | None = None,
    now: datetime | None = None,
    config: ScoringConfig = DEFAULT_CONFIG,
) -> ScoreResult:
    """Integer scores 0..10 (higher is better) for each node, and why."""
    table = as_table(nodes)
    now = now or datetime.now(UTC)
    placed = placed_per_domain or {}
    w_energy, w_time = policy_weights(hints.energy_policy, hints.budget_pressure)
    notes: list[str] = []

    def explanation(terms: _Terms | None) -> Explanation:
        return Explanation(
            job_name=hints.job_name,
            energy_policy=str(hints.energy_policy),
            energy_weight=w_energy,
            time_weight=w_time,
            budget_pressure=hints.budget_pressure,
            terms=terms,
            notes=tuple(notes),
            workload_kind=hints.workload_kind,
            reference_utilization_percent=hints.reference_utilization_percent
            if hints.is_service
            else None,
        )

    if not len(table):
        return ScoreResult({}, explanation(None), [])
    if not asks_for_gpus(hints):
        notes.append("the pod asks for no GPU: every node scores the same")
        same = [MAX_SCORE] * len(table)
        return ScoreResult(dict(zip(table.names, same, strict=True)), explanation(None), same)
    t = _terms(table, hints, now, config)
    some_meet = t.meets is not None and bool(t.meets.any())
    if t.meets is not None and not some_meet:
        w_energy, w_time = 0.0, 1.0
        notes.append("no candidate meets the deadline: ranked by completion time alone")
    energy_term = _relative(float(np.min(t.cost)), t.cost)
    time_term = _relative(float(np.min(t.pace)), t.pace)
    spread = np.ones(len(table))
    if hints.spread_across:
        values, ids = table.domain_ids(hints.spread_across)
        held = np.array([placed.get(v, 0) for v in values] or [0], dtype=np.int64)
        counts = np.where(ids >= 0, held[np.maximum(ids, 0)], -1)
        known = counts >= 0
        fewest = counts[known].min() if known.any() else 0
        spread = np.where(known & (counts <= fewest), 1.0, config.crowded_domain_factor)
    raw = (w_energy * energy_term + w_time * time_term) * t.load_factor * spread
    scores = np.clip(np.rint(MAX_SCORE * np.nan_to_num(raw)), 0, MAX_SCORE).astype(np.int64)
    if t.meets is not None and some_meet:
        scores[~t.meets] = 0
    t = replace(t, energy_term=energy_term, time_term=time_term, spread=spread, scores=scores)
    score_list = scores.tolist()
    return ScoreResult(
        scores=dict(zip(table.names, score_list, strict=True)),
        explanation=explanation(t),
        score_list=score_list,
    )
