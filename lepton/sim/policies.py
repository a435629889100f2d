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
  scoring disabled, ``percentageOfNodesToScore: 100``) with the extender's filter
  and score, which are **the same functions** the extender calls:
  :func:`lepton.core.scoring.filter_nodes` and :func:`lepton.core.scoring.score_nodes`.
  They are looked up on the module at call time, so what runs is always the
  extender's code. Nodes that look identical to the scorer (same GPU model and
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
from lepton.core.energy import POWER_CAP_AUTO, POWER_CAP_NONE
from lepton.core.hints import EnergyPolicy, JobHints
from lepton.core.scoring import CandidateNode

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# kube-scheduler constants (pkg/scheduler/schedule_one.go, apis/config/types.go)
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
DEFAULT_PERCENTAGE_OF_NODES_TO_SCORE = 50
MAX_NODE_SCORE = 100

EPOCH = datetime(2023, 1, 1, tzinfo=UTC)  # trace second 0; the trace gives no date


class PolicyName(StrEnum):
    """The compared schedulers, in the order results are shown."""

    DEFAULT_SCHEDULER = "default-scheduler"
    MOST_ALLOCATED = "most-allocated"
    LEPTON_BALANCED = "lepton-balanced"
    LEPTON_EFFICIENCY = "lepton-efficiency"


ALL_POLICIES: tuple[PolicyName, ...] = tuple(PolicyName)

# The GPU power limit each policy runs GPUs under: kube-scheduler sets none (the
# board's default limit); Lepton pods carry powerCap Auto (the profile's
# energy-optimal limit, lepton.core.energy.chosen_power_limit_watts).
POWER_CAP: Mapping[PolicyName, str] = {
    PolicyName.DEFAULT_SCHEDULER: POWER_CAP_NONE,
    PolicyName.MOST_ALLOCATED: POWER_CAP_NONE,
    PolicyName.LEPTON_BALANCED: POWER_CAP_AUTO,
    PolicyName.LEPTON_EFFICIENCY: POWER_CAP_AUTO,
}


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
    cpu_used: IntArray = field(init=False)
    memory_used: IntArray = field(init=False)
    pods: IntArray = field(init=False)  # active pods per node
    type_ids: IntArray = field(init=False)  # one id per distinct (model, GPU count)

    def __post_init__(self) -> None:
        n = len(self.names)
        self.cpu_used = np.zeros(n, dtype=np.int64)
        self.memory_used = np.zeros(n, dtype=np.int64)
        self.pods = np.zeros(n, dtype=np.int64)
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
    gpu_milli: int
    work_reference_gpu_hours: float
    gpu_models: tuple[str, ...]  # profile model names the pod accepts; empty = any
    deadline_seconds: float | None  # sim time


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
        order = (self.next_start_node_index + np.arange(n)) % n
        rotated = fits[order]
        feasible_total = int(rotated.sum())
        if feasible_total > wanted:
            cumulative = np.cumsum(rotated)
            stop = int(np.searchsorted(cumulative, wanted)) + 1
            processed = stop
            chosen = order[:stop][rotated[:stop]]
        else:
            processed = n
            chosen = order[rotated]
        self.next_start_node_index = (self.next_start_node_index + processed) % n
        return np.asarray(chosen, dtype=np.int64)

    def scores(self, table: NodeTable, idx: IntArray, pod: PodRequest) -> IntArray:
        cpu_cap = table.cpu_capacity[idx]
        mem_cap = table.memory_capacity[idx]
        cpu_req = table.cpu_used[idx] + pod.cpu_milli
        mem_req = table.memory_used[idx] + pod.memory_mib
        if self.name is PolicyName.MOST_ALLOCATED:
            gpu_cap = table.gpus[idx] * 1000
            gpu_req = table.gpu_used_milli[idx] + pod.num_gpu * min(pod.gpu_milli, 1000)
            total = (
                most_allocated_scores(cpu_cap, cpu_req)
                + most_allocated_scores(mem_cap, mem_req)
                + most_allocated_scores(gpu_cap, gpu_req)
            )
            return np.asarray(total // 3, dtype=np.int64)
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
        return int(best[self.rng.integers(len(best))])


@dataclass
class LeptonPolicy:
    """kube-scheduler's lepton-scheduler profile plus the extender's filter and score."""

    name: PolicyName
    energy_policy: EnergyPolicy
    rng: np.random.Generator
    config: scoring.ScoringConfig = scoring.DEFAULT_CONFIG
    power_cap: str = POWER_CAP_AUTO
    calls: int = 0
    last_scores: dict[str, int] = field(default_factory=dict)

    def hints(self, pod: PodRequest) -> JobHints:
        deadline = None
        if pod.deadline_seconds is not None and pod.num_gpu > 0:
            deadline = EPOCH + timedelta(seconds=pod.deadline_seconds)
        return JobHints(
            job_name=pod.name,
            energy_policy=self.energy_policy,
            work_reference_gpu_hours=pod.work_reference_gpu_hours,
            gpus_per_replica=pod.num_gpu,
            gpu_models=pod.gpu_models,
            deadline_time=deadline,
            power_cap=self.power_cap,
        )

    def choose(
        self, table: NodeTable, fits: BoolArray, pod: PodRequest, now_seconds: float
    ) -> int | None:
        idx = np.flatnonzero(fits)
        if len(idx) == 0:
            return None
        empty = table.pods[idx] == 0
        classes = table.type_ids[idx] * 2 + empty
        representatives: dict[str, IntArray] = {}
        candidates = []
        for cls in np.unique(classes):
            members = idx[classes == cls]
            first = int(members[0])
            name = f"{table.models[first]}x{int(table.gpus[first])}{'-empty' if cls % 2 else ''}"
            representatives[name] = members
            candidates.append(
                CandidateNode(
                    name=name,
                    gpu_model=table.models[first],
                    free_gpus=max(1, pod.num_gpu),  # fits: checked exactly by the engine
                    total_gpus=int(table.gpus[first]),
                    empty=bool(cls % 2),
                )
            )
        hints = self.hints(pod)
        now = EPOCH + timedelta(seconds=now_seconds)
        # Looked up on the module at call time: the extender's very functions.
        passed = scoring.filter_nodes(candidates, hints, None, now, self.config).passed
        if not passed:
            return None
        result = scoring.score_nodes(passed, hints, None, now, self.config)
        self.calls += 1
        self.last_scores = dict(result.scores)
        top = max(result.scores.values())
        best = np.concatenate([representatives[n] for n, s in result.scores.items() if s == top])
        return int(best[self.rng.integers(len(best))])


def shared_scorer() -> tuple[
    Callable[..., scoring.FilterResult], Callable[..., scoring.ScoreResult]
]:
    """The filter and score functions Lepton's policies call: the extender's own."""
    return scoring.filter_nodes, scoring.score_nodes


def make_policy(name: PolicyName, seed: int, percentage_of_nodes_to_score: int = 0) -> Policy:
    """A fresh policy with its own seeded random tie-breaker."""
    rng = np.random.default_rng(seed)
    if name is PolicyName.LEPTON_BALANCED:
        return LeptonPolicy(name, EnergyPolicy.BALANCED, rng)
    if name is PolicyName.LEPTON_EFFICIENCY:
        return LeptonPolicy(name, EnergyPolicy.EFFICIENCY, rng)
    return KubeSchedulerPolicy(name, rng, percentage_of_nodes_to_score)
