"""How each compared scheduler picks a node for a pod, over the simulator's node table.

Four policies, one interface (:class:`Policy`): given the nodes that fit a pod,
return the chosen node's index.

* ``default-scheduler`` — an emulation of kube-scheduler's default profile as
  upstream (v1.33) scores it: ``NodeResourcesFit`` with the ``LeastAllocated``
  strategy over cpu and memory (weights 1) plus ``NodeResourcesBalancedAllocation``
  over cpu and memory, integer arithmetic as in
  ``pkg/scheduler/framework/plugins/noderesources/{least_allocated,balanced_allocation}.go``;
  only ``percentageOfNodesToScore`` of the feasible nodes are scored, found from a
  rotating start index (``numFeasibleNodesToFind`` in ``schedule_one.go``); ties are
  broken uniformly at random (``selectHost``). The other default score plugins
  (TaintToleration, NodeAffinity, ImageLocality, PodTopologySpread,
  InterPodAffinity) give every trace node the same score and are left out.
* ``most-allocated`` — plain bin-packing: the same pipeline with the
  ``MostAllocated`` strategy over cpu, memory and ``nvidia.com/gpu`` (weights 1,
  the shape of upstream's "bin packing of extended resources" example), no
  BalancedAllocation.
* ``lepton-balanced`` / ``lepton-efficiency`` — kube-scheduler's ``lepton-scheduler``
  profile (``scheduler/lepton_scheduler/kube-scheduler-config.yaml``: resource
  scoring disabled, ``percentageOfNodesToScore: 100``) with the Lepton scheduler's filter
  and score, which are **the same functions** the Lepton scheduler calls:
  :func:`lepton.core.scoring.filter_nodes` and :func:`lepton.core.scoring.score_nodes`.
  They are looked up on the module at call time, so what runs is always the
  Lepton scheduler's code. Nodes that look identical to the scorer (same GPU model and
  count, empty or not) are scored once through one representative; every node
  of the best-scored representatives is then a tie, broken at random as
  kube-scheduler does. The scorer's names, weights and terms are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from lepton.core import scoring
from lepton.core.energy import POWER_CAP_AUTO, POWER_CAP_NONE, host_idle_watts
from lepton.core.hints import (
    DEFAULT_REFERENCE_UTILIZATION_PERCENT,
    EnergyPolicy,
    JobHints,
    WorkloadKind,
)
from lepton.core.names import MAX_SCORE
from lepton.core.scoring import CandidateTable

from .trace import BATCH, SERVICE

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

# kube-scheduler constants (pkg/scheduler/schedule_one.go, apis/config/types.go)
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
DEFAULT_PERCENTAGE_OF_NODES_TO_SCORE = 50
MAX_NODE_SCORE = 100

EPOCH = datetime(2023, 1, 1, tzinfo=UTC)  # trace second 0; the trace gives no date


class PolicyName(StrEnum):
    """The compared schedulers, in the order results are shown.

    ``-capped`` baselines run every GPU at the Auto power limit (what power caps
    alone save, without a placement change); ``-uncapped`` Lepton runs GPUs at
    their default limit (what Lepton's placement alone saves).
    """

    DEFAULT_SCHEDULER = "default-scheduler"
    DEFAULT_SCHEDULER_CAPPED = "default-scheduler-capped"
    MOST_ALLOCATED = "most-allocated"
    MOST_ALLOCATED_CAPPED = "most-allocated-capped"
    LEPTON_BALANCED_UNCAPPED = "lepton-balanced-uncapped"
    LEPTON_BALANCED = "lepton-balanced"
    LEPTON_EFFICIENCY_UNCAPPED = "lepton-efficiency-uncapped"
    LEPTON_EFFICIENCY = "lepton-efficiency"


ALL_POLICIES: tuple[PolicyName, ...] = tuple(PolicyName)
BASELINES: tuple[PolicyName, ...] = (
    PolicyName.DEFAULT_SCHEDULER,
    PolicyName.DEFAULT_SCHEDULER_CAPPED,
    PolicyName.MOST_ALLOCATED,
    PolicyName.MOST_ALLOCATED_CAPPED,
)
LEPTON_POLICIES: Mapping[PolicyName, EnergyPolicy] = {
    PolicyName.LEPTON_BALANCED_UNCAPPED: EnergyPolicy.BALANCED,
    PolicyName.LEPTON_BALANCED: EnergyPolicy.BALANCED,
    PolicyName.LEPTON_EFFICIENCY_UNCAPPED: EnergyPolicy.EFFICIENCY,
    PolicyName.LEPTON_EFFICIENCY: EnergyPolicy.EFFICIENCY,
}
# Each baseline's kube-scheduler resource-scoring strategy.
STRATEGY: Mapping[PolicyName, str] = {
    PolicyName.DEFAULT_SCHEDULER: "LeastAllocated",
    PolicyName.DEFAULT_SCHEDULER_CAPPED: "LeastAllocated",
    PolicyName.MOST_ALLOCATED: "MostAllocated",
    PolicyName.MOST_ALLOCATED_CAPPED: "MostAllocated",
}

# The GPU power limit each policy runs GPUs under: kube-scheduler sets none (the
# board's default limit) unless capped; Lepton pods carry powerCap Auto (the
# profile's energy-optimal limit, lepton.core.energy.chosen_power_limit_watts).
POWER_CAP: Mapping[PolicyName, str] = {
    PolicyName.DEFAULT_SCHEDULER: POWER_CAP_NONE,
    PolicyName.DEFAULT_SCHEDULER_CAPPED: POWER_CAP_AUTO,
    PolicyName.MOST_ALLOCATED: POWER_CAP_NONE,
    PolicyName.MOST_ALLOCATED_CAPPED: POWER_CAP_AUTO,
    PolicyName.LEPTON_BALANCED_UNCAPPED: POWER_CAP_NONE,
    PolicyName.LEPTON_BALANCED: POWER_CAP_AUTO,
    PolicyName.LEPTON_EFFICIENCY_UNCAPPED: POWER_CAP_NONE,
    PolicyName.LEPTON_EFFICIENCY: POWER_CAP_AUTO,
}
# percentageOfNodesToScore per policy (0 = upstream's adaptive default): the
# default profile keeps upstream's default; a bin-packing profile must score
# every feasible node to pack well, and lepton-scheduler's profile sets 100.
PERCENTAGE_OF_NODES_TO_SCORE: Mapping[PolicyName, int] = {
    PolicyName.DEFAULT_SCHEDULER: 0,
    PolicyName.DEFAULT_SCHEDULER_CAPPED: 0,
} | {p: 100 for p in ALL_POLICIES if p not in STRATEGY or STRATEGY[p] == "MostAllocated"}


@dataclass
class NodeTable:
    """The fleet as arrays, updated in place by the engine as pods come and go."""

    names: list[str]
    models: list[str]  # profile model per node (after the G2/G3 … mapping)
    trace_models: list[str]  # the trace's own model name per node
    cpu_capacity: IntArray
    memory_capacity: IntArray
    gpus: IntArray
    # free milli-GPU per GPU slot; slots a node does not have hold -1
    gpu_free_milli: IntArray
    host_idle_watts: FloatArray | None = None  # per node; None = energy.host_idle_watts(gpus)
    cpu_used: IntArray = field(init=False)
    memory_used: IntArray = field(init=False)
    pods: IntArray = field(init=False)  # active pods per node
    type_ids: IntArray = field(init=False)  # one id per distinct (model, GPU count)
    # GPU-devices' worth of busy time per node (sum of its pods' utilisations)
    gpu_busy: FloatArray = field(init=False)
    powered: BoolArray = field(init=False)  # a candidate: up (autoscaler) or always on
    distinct_models: list[str] = field(init=False)
    model_ids: IntArray = field(init=False)  # per node, into distinct_models

    def __post_init__(self) -> None:
        n = len(self.names)
        self.cpu_used = np.zeros(n, dtype=np.int64)
        self.memory_used = np.zeros(n, dtype=np.int64)
        self.pods = np.zeros(n, dtype=np.int64)
        self.gpu_busy = np.zeros(n, dtype=np.float64)
        self.powered = np.ones(n, dtype=bool)
        if self.host_idle_watts is None:
            self.host_idle_watts = np.array(
                [host_idle_watts(int(g)) for g in self.gpus], dtype=np.float64
            )
        models: dict[str, int] = {}
        self.model_ids = np.array(
            [models.setdefault(m, len(models)) for m in self.models], dtype=np.int64
        )
        self.distinct_models = list(models)
        kinds: dict[tuple[str, int], int] = {}
        ids = [
            kinds.setdefault((m, int(g)), len(kinds))
            for m, g in zip(self.models, self.gpus, strict=True)
        ]
        self.type_ids = np.array(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def gpu_used_milli(self) -> IntArray:
        free = np.where(self.gpu_free_milli < 0, 0, self.gpu_free_milli).sum(axis=1)
        return np.asarray(self.gpus * 1000 - free, dtype=np.int64)


@dataclass(frozen=True)
class PodRequest:
    """What a policy needs to know about the pod it places."""

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int  # per GPU; < 1000 a shared fraction of one GPU
    gpu_models: tuple[str, ...]  # profile model names the pod accepts; empty = any
    kind: str = BATCH  # trace.SERVICE or trace.BATCH
    work_reference_gpu_hours: float = 0.0  # batch: the whole job's work
    reference_utilization_percent: float = 0.0  # service: % of one A40, per GPU held
    lifetime_seconds: float | None = None  # service: its trace lifetime
    deadline_seconds: float | None = None  # sim time; batch only


class Policy(Protocol):
    """Picks one node among those that fit."""

    name: PolicyName

    def choose(
        self, table: NodeTable, fits: BoolArray, pod: PodRequest, now_seconds: float
    ) -> int | None: ...


def num_feasible_nodes_to_find(num_all_nodes: int, percentage: int) -> int:
    """kube-scheduler's ``numFeasibleNodesToFind`` (percentage 0 = adaptive default)."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    adaptive = percentage
    if adaptive <= 0:
        adaptive = DEFAULT_PERCENTAGE_OF_NODES_TO_SCORE - num_all_nodes // 125
        adaptive = max(adaptive, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    found = num_all_nodes * adaptive // 100
    return max(found, MIN_FEASIBLE_NODES_TO_FIND)


def least_allocated_scores(capacity: IntArray, requested: IntArray) -> IntArray:
    """Per resource: ``(capacity - requested) * 100 / capacity``, 0 when over (integer)."""
    safe = np.maximum(capacity, 1)
    score = (capacity - requested) * MAX_NODE_SCORE // safe
    return np.where((capacity <= 0) | (requested > capacity), 0, score)


def most_allocated_scores(capacity: IntArray, requested: IntArray) -> IntArray:
    """Per resource: ``requested * 100 / capacity``, requested capped at capacity (integer)."""
    safe = np.maximum(capacity, 1)
    score = np.minimum(requested, capacity) * MAX_NODE_SCORE // safe
    return np.where(capacity <= 0, 0, score)


def balanced_allocation_scores(fractions: list[npt.NDArray[np.float64]]) -> IntArray:
    """``(1 - std(fractions)) * 100``, fractions capped at 1 (upstream balanced_allocation.go)."""
    capped = [np.minimum(f, 1.0) for f in fractions]
    if len(capped) == 2:
        std = np.abs(capped[0] - capped[1]) / 2
    else:
        stacked = np.stack(capped)
        std = np.sqrt(((stacked - stacked.mean(axis=0)) ** 2).mean(axis=0))
    return np.asarray(((1 - std) * MAX_NODE_SCORE).astype(np.int64))


def most_allocated_fit_scores(table: NodeTable, idx: IntArray, pod: PodRequest) -> IntArray:
    """``NodeResourcesFit`` with ``MostAllocated`` over cpu, memory, nvidia.com/gpu (weights 1).

    As upstream's ``mostResourceScorer``: the weighted mean of each resource's
    score (integer), a resource skipped where the node has none or, for an
    extended resource like the GPU, where the pod requests none.
    """
    cpu = most_allocated_scores(table.cpu_capacity[idx], table.cpu_used[idx] + pod.cpu_milli)
    mem = most_allocated_scores(table.memory_capacity[idx], table.memory_used[idx] + pod.memory_mib)
    if pod.num_gpu <= 0:
        return np.asarray((cpu + mem) // 2, dtype=np.int64)
    gpu_req = table.gpu_used_milli[idx] + pod.num_gpu * min(pod.gpu_milli, 1000)
    gpu = most_allocated_scores(table.gpus[idx] * 1000, gpu_req)
    return np.asarray((cpu + mem + gpu) // 3, dtype=np.int64)


@dataclass
class KubeSchedulerPolicy:
    """kube-scheduler with a resource-scoring strategy, emulated (see the module doc)."""

    name: PolicyName
    rng: np.random.Generator
    percentage_of_nodes_to_score: int = 0  # 0 = upstream's adaptive default
    next_start_node_index: int = 0

    def _window(self, fits: BoolArray) -> IntArray:
        """The feasible nodes kube-scheduler scores, found from a rotating start."""
        n = len(fits)
        wanted = num_feasible_nodes_to_find(n, self.percentage_of_nodes_to_score)
        feasible = np.flatnonzero(fits)
        if len(feasible) <= wanted:
            # every node is examined: the start moves by n, i.e. stays
            return np.asarray(feasible, dtype=np.int64)
        order = (self.next_start_node_index + np.arange(n)) % n
        rotated = fits[order]
        cumulative = np.cumsum(rotated)
        stop = int(np.searchsorted(cumulative, wanted)) + 1
        chosen = order[:stop][rotated[:stop]]
        self.next_start_node_index = (self.next_start_node_index + stop) % n
        return np.asarray(chosen, dtype=np.int64)

    def scores(self, table: NodeTable, idx: IntArray, pod: PodRequest) -> IntArray:
        if STRATEGY[self.name] == "MostAllocated":
            return most_allocated_fit_scores(table, idx, pod)
        cpu_cap = table.cpu_capacity[idx]
        mem_cap = table.memory_capacity[idx]
        cpu_req = table.cpu_used[idx] + pod.cpu_milli
        mem_req = table.memory_used[idx] + pod.memory_mib
        least = (
            least_allocated_scores(cpu_cap, cpu_req) + least_allocated_scores(mem_cap, mem_req)
        ) // 2
        balanced = balanced_allocation_scores(
            [cpu_req / np.maximum(cpu_cap, 1), mem_req / np.maximum(mem_cap, 1)]
        )
        return np.asarray(least + balanced, dtype=np.int64)

    def choose(
        self, table: NodeTable, fits: BoolArray, pod: PodRequest, now_seconds: float
    ) -> int | None:
        if not fits.any():
            return None
        idx = self._window(fits)
        scores = self.scores(table, idx, pod)
        best = idx[scores == scores.max()]
        return int(best[self.rng.integers(len(best))]) if len(best) > 1 else int(best[0])


# kube-scheduler adds extender_score * (MaxNodeScore / MaxExtenderPriority) * weight
# to the plugins' weighted sum (pkg/scheduler/schedule_one.go, prioritizeNodes).
EXTENDER_WEIGHT = 10
EXTENDER_SCALE = MAX_NODE_SCORE // MAX_SCORE


@dataclass
class LeptonPolicy:
    """kube-scheduler's lepton-scheduler profile: the Lepton scheduler's filter and score plus
    ``NodeResourcesFit``/``MostAllocated``, summed per node as kube-scheduler does.

    The Lepton scheduler sees what it would see in a cluster: each candidate node's GPU
    model, free and total GPUs, whether it is empty (placing there keeps an
    otherwise idle node up), its predicted GPU utilisation (the node's current
    busy fraction: a persistence forecast, as the predictor gives without
    history) and its host idle draw. A CPU-only pod is not a GPU job: the
    Lepton scheduler gives every node the same score, so only MostAllocated places it.
    """

    name: PolicyName
    energy_policy: EnergyPolicy
    rng: np.random.Generator
    config: scoring.ScoringConfig = scoring.DEFAULT_CONFIG
    power_cap: str = POWER_CAP_AUTO
    forecast: bool = True
    calls: int = 0
    last_scores: dict[str, int] = field(default_factory=dict)

    def hints(self, pod: PodRequest) -> JobHints:
        deadline = None
        if pod.deadline_seconds is not None and pod.num_gpu > 0:
            deadline = EPOCH + timedelta(seconds=pod.deadline_seconds)
        return job_hints(pod, self.energy_policy, self.power_cap, deadline)

    def candidates(self, table: NodeTable, idx: IntArray, pod: PodRequest) -> CandidateTable:
        """The fitting nodes as the Lepton scheduler's candidate table (one row per node)."""
        whole_free = (table.gpu_free_milli[idx] == 1000).sum(axis=1)
        if pod.num_gpu == 1 and pod.gpu_milli < 1000:
            whole_free = np.maximum(whole_free, 1)  # the share fits: checked by the engine
        gpus = table.gpus[idx]
        busy = table.gpu_busy[idx] / np.maximum(gpus, 1) if self.forecast else np.zeros(len(idx))
        return candidate_table(table, idx, whole_free, busy)

    def choose(
        self, table: NodeTable, fits: BoolArray, pod: PodRequest, now_seconds: float
    ) -> int | None:
        idx = np.flatnonzero(fits)
        if len(idx) == 0:
            return None
        fit_scores = most_allocated_fit_scores(table, idx, pod)
        if pod.num_gpu > 0:
            nodes = self.candidates(table, idx, pod)
            hints = self.hints(pod)
            now = EPOCH + timedelta(seconds=now_seconds)
            # Looked up on the module at call time: the Lepton scheduler's very functions.
            passed = scoring.filter_nodes(nodes, hints, None, now, self.config).passed
            if not len(passed):
                return None
            result = scoring.score_nodes(passed, hints, None, now, self.config)
            self.calls += 1
            self.last_scores = dict(result.scores)
            keep = np.isin(np.array(nodes.names), np.array(list(result.scores)))
            idx, fit_scores = idx[keep], fit_scores[keep]
            lepton = np.array([result.scores[table.names[i]] for i in idx], dtype=np.int64)
            total = lepton * EXTENDER_SCALE * EXTENDER_WEIGHT + fit_scores
        else:
            total = fit_scores
        best = idx[total == total.max()]
        return int(best[self.rng.integers(len(best))]) if len(best) > 1 else int(best[0])


def candidate_table(
    table: NodeTable, idx: IntArray, free_gpus: IntArray, utilization: FloatArray
) -> CandidateTable:
    """Rows ``idx`` of the fleet as the Lepton scheduler's :class:`CandidateTable`."""
    return CandidateTable(
        names=[table.names[i] for i in idx.tolist()],
        models=table.distinct_models,
        model_index=table.model_ids[idx],
        free_gpus=np.asarray(free_gpus, dtype=np.int64),
        total_gpus=table.gpus[idx],
        empty=table.pods[idx] == 0,
        predicted_utilization=np.asarray(utilization, dtype=np.float64),
        labels=[_NO_LABELS] * len(idx),
        host_idle_watts=None if table.host_idle_watts is None else table.host_idle_watts[idx],
    )


_NO_LABELS: Mapping[str, str] = {}


def job_hints(
    pod: PodRequest, energy_policy: EnergyPolicy, power_cap: str, deadline: datetime | None
) -> JobHints:
    """The hints the Lepton scheduler would read from the pod's annotations."""
    service = pod.kind == SERVICE
    return JobHints(
        job_name=pod.name,
        energy_policy=energy_policy,
        work_reference_gpu_hours=pod.work_reference_gpu_hours,
        gpus_per_replica=pod.num_gpu,
        gpu_models=pod.gpu_models,
        deadline_time=None if service else deadline,
        power_cap=power_cap,
        workload_kind=WorkloadKind.SERVICE if service else WorkloadKind.BATCH,
        reference_utilization_percent=pod.reference_utilization_percent
        if service
        else DEFAULT_REFERENCE_UTILIZATION_PERCENT,
        lifetime_seconds=pod.lifetime_seconds if service else None,
        gpu_milli=min(max(pod.gpu_milli, 1), 1000) if pod.num_gpu > 0 else 1000,
    )


def shared_scorer() -> tuple[
    Callable[..., scoring.FilterResult], Callable[..., scoring.ScoreResult]
]:
    """The filter and score functions Lepton's policies call: the Lepton scheduler's own."""
    return scoring.filter_nodes, scoring.score_nodes


def make_policy(
    name: PolicyName, seed: int, percentage_of_nodes_to_score: int | None = None
) -> Policy:
    """A fresh policy with its own seeded random tie-breaker.

    ``percentage_of_nodes_to_score`` None = the policy's own (see
    :data:`PERCENTAGE_OF_NODES_TO_SCORE`).
    """
    rng = np.random.default_rng(seed)
    if name in LEPTON_POLICIES:
        return LeptonPolicy(name, LEPTON_POLICIES[name], rng, power_cap=POWER_CAP[name])
    pct = (
        PERCENTAGE_OF_NODES_TO_SCORE[name]
        if percentage_of_nodes_to_score is None
        else percentage_of_nodes_to_score
    )
    return KubeSchedulerPolicy(name, rng, pct)
