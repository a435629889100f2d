"""The event-driven replay: pods arrive, wait, run and leave; nodes are added and removed.

One run replays a trace under one policy in one regime. A clock jumps from
event to event (arrivals, completions, nodes becoming ready, empty nodes timing
out). Placement is the policy's (:mod:`lepton.sim.policies`); how long a pod
runs and what it draws come from the core's GPU profiles and energy model, so
that the simulator, the Lepton scheduler and the operator share one picture of a GPU.

**Workload kinds.** Each trace pod is a service or a batch job, from its QoS
class (:data:`lepton.sim.trace.DEFAULT_KIND_MAP`, overridable):

* a *batch* pod carries work in reference (A40) GPU-seconds, its trace runtime
  times the speed of the GPU it ran on in the trace (unknown: the fleet's mean
  speed, ``trace_speed``); on model ``m`` at limit ``cap`` it runs
  ``work / (gpus · speed(m, cap))`` and keeps its GPUs busy;
* a *service* keeps its trace lifetime whatever it runs on. Its demand is
  ``reference_utilization_percent`` of one A40 per GPU held, scaled by its share
  of the GPU (``gpu_milli``): ``u_ref = service_reference_utilization_percent/100 ·
  gpu_milli/1000``. On model ``m`` its utilisation is ``u_m = u_ref / speed(m, cap)``;
  it is *above target* where ``u_m > service_target_utilization · share``.

**Regimes.** ``scale_in`` (the default) emulates the cluster autoscaler for every
policy alike: only powered nodes are candidates; when no powered node fits a
pending pod (and no node being added will), one node of the kind the expander
picks is added (``least-waste``, cluster-autoscaler's expander: the node group
leaving the least CPU and memory idle, ties at random) and is ready after
``provisioning_delay_seconds``; a node empty for ``scale_in_grace_seconds`` is
removed (``--scale-down-unneeded-time``). A node draws its idle power from the
moment it is requested until it is removed. ``always_on`` powers every node of
the fleet for the whole window and has no autoscaler.

On top of idle power each running pod adds its GPUs' active power at the
policy's power limit: a batch pod ``share · (P_busy - P_idle)``, a service
``gpus · (P_busy - P_idle) · min(1, u_m)``. Every figure is a **model estimate**.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton.core.energy import (
    SECONDS_PER_HOUR,
    chosen_power_limit_watts,
    host_idle_watts,
    service_utilization,
)
from lepton.core.errors import LeptonError
from lepton.core.hints import FULL_GPU_MILLI
from lepton.core.profiles import get_profile
from lepton.core.scoring import DEFAULT_CONFIG as SCORING_DEFAULTS

from .policies import (
    POWER_CAP,
    LeptonPolicy,
    NodeTable,
    PodRequest,
    PolicyName,
    make_policy,
)
from .service_load import ServiceLoad
from .trace import (
    BATCH,
    DEFAULT_KIND_MAP,
    SERVICE,
    TraceNode,
    TracePod,
    workload_kind,
)

# Assumed models behind the trace's undisclosed and memory-named GPUs. The
# trace (Alibaba PAI 2023) hides what G2 and G3 are: 8-GPU servers that make up
# most of the fleet; we assume data-centre training parts of the trace's era.
DEFAULT_MODEL_MAP: Mapping[str, str] = {
    "G2": "A100",  # assumed: undisclosed; 549 nodes x 8 GPUs
    "G3": "H100",  # assumed: undisclosed; 39 nodes x 8 GPUs, the largest hosts
    "V100M16": "V100",  # the trace's V100 16 GB
    "V100M32": "V100",  # the trace's V100 32 GB
}
DEFAULT_SCALE_IN_GRACE_SECONDS = 600.0  # cluster-autoscaler --scale-down-unneeded-time
# cluster-autoscaler FAQ ("How fast is Cluster Autoscaler?"): "on GCE it usually
# takes 3 to 4 minutes from CA request to when pods can be scheduled on newly
# created nodes ... Total time ... is usually about 5 minutes."
DEFAULT_PROVISIONING_DELAY_SECONDS = 300.0
DEFAULT_DEADLINE_FACTOR = 1.5  # assumed: a batch pod's deadline is 1.5x its trace runtime
# assumed: a service keeps 30 % of one A40 busy per whole GPU it holds at its
# expected load (inference services run GPUs far below saturation: Weng et al.,
# "MLaaS in the Wild", NSDI 2022, on Alibaba PAI); a shared pod its share of that.
DEFAULT_SERVICE_REFERENCE_UTILIZATION_PERCENT = 30.0
# the scorer's own service target (ScoringConfig.service_target_utilization)
DEFAULT_SERVICE_TARGET_UTILIZATION = SCORING_DEFAULTS.service_target_utilization
REGIMES = ("scale_in", "always_on")
EXPANDERS = ("least-waste", "random")
WINDOWS = ("arrivals", "trace", "run")


class SimConfigError(LeptonError, ValueError):
    """A simulation option that cannot be used; the message names it and how to write it."""


@dataclass(frozen=True)
class SimConfig:
    """Every assumption the trace does not fix; printed beside every result."""

    seed: int = 0
    model_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MODEL_MAP))
    kind_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_KIND_MAP))
    # Speed (relative to the A40) of the GPU each batch pod ran on in the trace; the
    # trace does not say which it was. None = the fleet's GPU-weighted mean speed.
    trace_speed: float | None = None
    regime: str = "scale_in"
    scale_in_grace_seconds: float = DEFAULT_SCALE_IN_GRACE_SECONDS
    provisioning_delay_seconds: float = DEFAULT_PROVISIONING_DELAY_SECONDS
    expander: str = "least-waste"
    deadline_factor: float = DEFAULT_DEADLINE_FACTOR
    service_reference_utilization_percent: float = DEFAULT_SERVICE_REFERENCE_UTILIZATION_PERCENT
    service_target_utilization: float = DEFAULT_SERVICE_TARGET_UTILIZATION
    # Divide every trace time by this (a slice replayed faster on a real cluster).
    time_compression: float = 1.0
    # kube-scheduler's percentageOfNodesToScore; None = each policy's own
    percentage_of_nodes_to_score: int | None = None
    # Lepton: pass each node's current GPU utilisation as the load forecast
    forecast: bool = True
    # With measured service loads (simulate's service_loads): the policy sees each service's
    # forecast demand (True) or the declared service_reference_utilization_percent (False).
    forecast_services: bool = True
    # The measurement window's end: "arrivals" (the last arrival: the steady
    # state a load level describes), "trace" (the trace's own end: the last
    # deletion) or "run" (the last event: every joule of the run).
    window: str = "arrivals"
    # The window starts at the arrival of this fraction of the pods (a warm-up):
    # the openb pod lists are snapshots whose first 10 % of pods are long-lived
    # survivors spread over 80 % of the trace's span; the load a level describes
    # is the one after them. 0 = from the first arrival.
    warmup_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise SimConfigError(f"regime {self.regime!r}: choose from {', '.join(REGIMES)}")
        if self.window not in WINDOWS:
            raise SimConfigError(f"window {self.window!r}: choose from {', '.join(WINDOWS)}")
        if self.expander not in EXPANDERS:
            raise SimConfigError(f"expander {self.expander!r}: choose from {', '.join(EXPANDERS)}")
        if self.provisioning_delay_seconds < 0 or self.scale_in_grace_seconds < 0:
            raise SimConfigError("provisioning delay and scale-in grace must be >= 0 seconds")

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "modelMap": dict(self.model_map),
            "kindMap": {k or "(none)": v for k, v in self.kind_map.items()},
            "traceSpeed": self.trace_speed,
            "regime": self.regime,
            "scaleInGraceSeconds": self.scale_in_grace_seconds,
            "provisioningDelaySeconds": self.provisioning_delay_seconds,
            "expander": self.expander,
            "deadlineFactor": self.deadline_factor,
            "serviceReferenceUtilizationPercent": self.service_reference_utilization_percent,
            "serviceTargetUtilization": self.service_target_utilization,
            "timeCompression": self.time_compression,
            "percentageOfNodesToScore": self.percentage_of_nodes_to_score,
            "forecast": self.forecast,
            "forecastServices": self.forecast_services,
            "window": self.window,
            "warmupFraction": self.warmup_fraction,
        }


@dataclass(frozen=True)
class Placement:
    """Where and when one pod ran in the replay."""

    pod: str
    node: str
    model: str
    start_seconds: float
    end_seconds: float
    gpu_share: float
    dynamic_watts: float
    kind: str = BATCH
    utilization: float = 1.0  # per GPU held: u_m for a service, 1 for batch
    above_target: bool = False


@dataclass
class SimResult:
    """One policy's replay in one regime: per-pod outcomes, energy, timings."""

    policy: PolicyName
    config: SimConfig
    trace_speed: float
    nodes: int
    gpus: int
    pods: int
    placements: list[Placement]
    unscheduled: list[str]
    creation_seconds: dict[str, float]
    deadline_seconds: dict[str, float]
    horizon_seconds: float  # the last event (a completion or a node removal)
    trace_end_seconds: float  # the trace's own end: the common window
    last_arrival_seconds: float
    window_start_seconds: float
    dynamic_joules: float  # over the whole run, unclipped
    fleet_idle_watts: float
    nodes_added: int
    work_gpu_hours: float  # GPU-hours the trace's pods held
    wall_seconds: float
    # (node, on, off, idle watts): when each node was up (scale in; always on: all)
    power_intervals: list[tuple[str, float, float, float]] = field(default_factory=list)
    node_gpus: dict[str, int] = field(default_factory=dict)  # GPUs per node, by name

    def window_end(self) -> float:
        """Where this run's measurement window ends (``SimConfig.window``)."""
        if self.config.window == "arrivals":
            return self.last_arrival_seconds
        if self.config.window == "trace":
            return self.trace_end_seconds
        return self.horizon_seconds

    def metrics(self, common_horizon_seconds: float | None = None) -> dict[str, Any]:
        """The headline figures over the window ``[0, end]``, JSON-ready (kWh, seconds).

        ``end`` is ``common_horizon_seconds`` or the configured window
        (:meth:`window_end`): the same for every compared policy on one trace.
        Idle energy, service energy, node-hours and GPU allocation are clipped
        to the window (a steady-state measurement); a batch pod that arrived in
        the window is charged its dynamic energy to completion (the window's
        work, done wherever and whenever it ran: ``energyKWhClipped`` is the
        figure with that tail cut off); completion times, queueing and service
        utilisation count every pod. Always on, every node draws idle power
        over the whole window; scale in, a node draws it while the autoscaler
        had it (from its request to its removal).
        """
        end = common_horizon_seconds if common_horizon_seconds is not None else self.window_end()
        begin = min(self.window_start_seconds, end)
        span = end - begin

        def overlap(a: float, b: float) -> float:
            return max(0.0, min(b, end) - max(a, begin))

        batch = [p for p in self.placements if p.kind == BATCH]
        services = [p for p in self.placements if p.kind == SERVICE]
        jct = np.array([p.end_seconds - self.creation_seconds[p.pod] for p in batch], dtype=float)
        wait = np.array(
            [p.start_seconds - self.creation_seconds[p.pod] for p in self.placements], dtype=float
        )
        misses = sum(
            1
            for p in batch
            if p.pod in self.deadline_seconds and p.end_seconds > self.deadline_seconds[p.pod]
        )
        service_gpu_seconds = sum(p.gpu_share * (p.end_seconds - p.start_seconds) for p in services)
        above_gpu_seconds = sum(
            p.gpu_share * (p.end_seconds - p.start_seconds) for p in services if p.above_target
        )
        held = sum(p.gpu_share * overlap(p.start_seconds, p.end_seconds) for p in self.placements)
        # What each kind costs the window's load: a service draws its watts while the
        # window lasts (clipped: its lifetime is the same wherever it runs); a batch pod
        # that arrived in the window is charged its dynamic energy to completion, even
        # the part after the window, so that finishing work later (or on a slow GPU,
        # past the window's end) is not counted as a saving.
        service_dynamic = sum(
            p.dynamic_watts * overlap(p.start_seconds, p.end_seconds) for p in services
        )
        batch_dynamic = sum(
            p.dynamic_watts * (p.end_seconds - p.start_seconds)
            for p in batch
            if begin <= self.creation_seconds[p.pod] <= end
        )
        batch_clipped = sum(
            p.dynamic_watts * overlap(p.start_seconds, p.end_seconds) for p in batch
        )
        dynamic = service_dynamic + batch_dynamic

        def pct(values: np.ndarray[Any, Any], q: float) -> float:
            return float(np.percentile(values, q)) if len(values) else 0.0

        if self.config.regime == "always_on":
            idle_joules = self.fleet_idle_watts * span
            node_seconds = self.nodes * span
            powered_gpu_seconds = self.gpus * span
        else:
            idle_joules = sum(w * overlap(a, b) for _, a, b, w in self.power_intervals)
            node_seconds = sum(overlap(a, b) for _, a, b, _ in self.power_intervals)
            powered_gpu_seconds = sum(
                self.node_gpus.get(n, 0) * overlap(a, b) for n, a, b, _ in self.power_intervals
            )
        total_kwh = (idle_joules + dynamic) / 3.6e6
        clipped_kwh = (idle_joules + service_dynamic + batch_clipped) / 3.6e6
        return {
            "policy": str(self.policy),
            "regime": self.config.regime,
            "seed": self.config.seed,
            "pods": self.pods,
            "placed": len(self.placements),
            "unscheduled": len(self.unscheduled),
            "nodes": self.nodes,
            "windowStartHours": begin / SECONDS_PER_HOUR,
            "windowHours": span / SECONDS_PER_HOUR,
            "lastEventHours": self.horizon_seconds / SECONDS_PER_HOUR,
            "workGpuHours": self.work_gpu_hours,
            "traceSpeed": self.trace_speed,
            "energyKWh": total_kwh,
            "idleKWh": idle_joules / 3.6e6,
            "dynamicKWh": dynamic / 3.6e6,
            "batchDynamicKWh": batch_dynamic / 3.6e6,
            "serviceDynamicKWh": service_dynamic / 3.6e6,
            # every pod's draw clipped to the window (batch work past its end uncounted)
            "energyKWhClipped": clipped_kwh,
            "whPerGpuHour": total_kwh * 1000 / (held / 3600) if held else math.nan,
            "nodeHoursPowered": node_seconds / SECONDS_PER_HOUR,
            "nodesAdded": self.nodes_added,
            "meanGpuAllocation": held / (self.gpus * span) if self.gpus and span else 0.0,
            # held GPU-time over powered GPU-time: what consolidation could still win
            "gpuFillOfPowered": held / powered_gpu_seconds if powered_gpu_seconds else 0.0,
            "batchPods": len(batch),
            "servicePods": len(services),
            "meanBatchCompletionSeconds": float(jct.mean()) if len(jct) else 0.0,
            "p95BatchCompletionSeconds": pct(jct, 95),
            "meanQueueingSeconds": float(wait.mean()) if len(wait) else 0.0,
            "p95QueueingSeconds": pct(wait, 95),
            "deadlineMisses": misses,
            "servicesAboveTarget": sum(1 for p in services if p.above_target),
            "serviceGpuHoursAboveTargetShare": above_gpu_seconds / service_gpu_seconds
            if service_gpu_seconds
            else 0.0,
            "wallSeconds": self.wall_seconds,
        }


def _warmup_end(arrivals: Sequence[float], fraction: float) -> float:
    if not arrivals or fraction <= 0:
        return 0.0
    return arrivals[min(len(arrivals) - 1, int(fraction * len(arrivals)))]


def build_table(nodes: Sequence[TraceNode], model_map: Mapping[str, str]) -> NodeTable:
    """The fleet as the policies' node table, trace models mapped to profile models."""
    slots = max((n.gpus for n in nodes), default=1)
    free = np.full((len(nodes), max(1, slots)), -1, dtype=np.int64)
    for i, n in enumerate(nodes):
        free[i, : n.gpus] = FULL_GPU_MILLI
    return NodeTable(
        names=[n.name for n in nodes],
        models=[model_map.get(n.model, n.model) for n in nodes],
        trace_models=[n.model for n in nodes],
        cpu_capacity=np.array([n.cpu_milli for n in nodes], dtype=np.int64),
        memory_capacity=np.array([n.memory_mib for n in nodes], dtype=np.int64),
        gpus=np.array([n.gpus for n in nodes], dtype=np.int64),
        gpu_free_milli=free,
        host_idle_watts=np.array([host_idle_watts(n.gpus) for n in nodes], dtype=np.float64),
    )


def fleet_mean_speed(nodes: Sequence[TraceNode], model_map: Mapping[str, str]) -> float:
    """Speed of a GPU drawn at random from the fleet (relative to the A40, default limit)."""
    gpus = sum(n.gpus for n in nodes)
    if not gpus:
        return 1.0
    return (
        sum(n.gpus * get_profile(model_map.get(n.model, n.model)).speed_at(None) for n in nodes)
        / gpus
    )


@dataclass(frozen=True)
class ModelRun:
    """How fast one GPU model runs and what it draws above idle, at a policy's power limit."""

    speed: float
    dynamic_watts_per_gpu: float  # P_busy at the limit minus P_idle
    limit_watts: float = 0.0


def model_runs(models: set[str], power_cap: str) -> dict[str, ModelRun]:
    """Each model's run at the limit ``power_cap`` chooses (the replay uses it too)."""
    runs = {}
    for model in models:
        profile = get_profile(model)
        limit = chosen_power_limit_watts(profile, power_cap)
        runs[model] = ModelRun(
            speed=profile.speed_at(limit),
            dynamic_watts_per_gpu=profile.active_power_watts(1.0, limit) - profile.idle_watts,
            limit_watts=limit,
        )
    return runs


def node_idle_watts_of(table: NodeTable) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Each node's idle draw: its host plus every GPU idle (energy.node_idle_watts, per node)."""
    gpu_idle = np.array([get_profile(m).idle_watts for m in table.models], dtype=np.float64)
    host = (
        table.host_idle_watts
        if table.host_idle_watts is not None
        else np.array([host_idle_watts(int(g)) for g in table.gpus])
    )
    return np.asarray(host + table.gpus * gpu_idle, dtype=np.float64)


class _Requests:
    """Every pod's request as columns, to find at once the queued pods a node now fits."""

    def __init__(self, pods: Sequence[TracePod], trace_models: Sequence[str]) -> None:
        self.cpu = np.array([p.cpu_milli for p in pods], dtype=np.int64)
        self.mem = np.array([p.memory_mib for p in pods], dtype=np.int64)
        self.gpus = np.array([p.num_gpu for p in pods], dtype=np.int64)
        self.milli = np.array([p.gpu_milli for p in pods], dtype=np.int64)
        self.shares = np.array([p.shares_gpu for p in pods], dtype=bool)
        specs: dict[tuple[str, ...], int] = {(): 0}
        self.spec_id = np.array([specs.setdefault(p.gpu_spec, len(specs)) for p in pods])
        models = np.array(trace_models)
        self.allowed = np.ones((len(specs), len(models)), dtype=bool)  # spec x node
        for spec, sid in specs.items():
            if spec:
                self.allowed[sid] = np.isin(models, spec)


def simulate(
    pods: Sequence[TracePod],
    nodes: Sequence[TraceNode],
    policy_name: PolicyName,
    config: SimConfig | None = None,
    service_loads: Mapping[str, ServiceLoad] | None = None,
) -> SimResult:
    """Replay ``pods`` on ``nodes`` under one policy, in ``config.regime``.

    ``service_loads`` (:mod:`lepton.sim.service_load`): the services the trace gives
    a measured history run at their measured load; the policy sees their forecast
    demand, or with ``config.forecast_services`` off, the declared one.
    """
    config = config or SimConfig()
    started = time.perf_counter()
    compression = config.time_compression or 1.0
    grace = config.scale_in_grace_seconds / compression
    delay = config.provisioning_delay_seconds / compression
    autoscaled = config.regime == "scale_in"
    table = build_table(nodes, config.model_map)
    n_nodes = len(table)
    policy = make_policy(policy_name, config.seed, config.percentage_of_nodes_to_score)
    if isinstance(policy, LeptonPolicy):
        policy.forecast = config.forecast
    rng = np.random.default_rng([config.seed, 1])  # the expander's own tie-breaker
    trace_speed = config.trace_speed or fleet_mean_speed(nodes, config.model_map)
    runs = model_runs(set(table.models), POWER_CAP[policy_name])
    idle_watts = node_idle_watts_of(table)
    req = _Requests(pods, table.trace_models)
    kinds = [workload_kind(p, config.kind_map) for p in pods]
    u_ref_full = config.service_reference_utilization_percent / 100.0
    target = config.service_target_utilization

    # node groups for the autoscaler: same trace model, GPUs, CPU and memory
    groups: dict[tuple[str, int, int, int], int] = {}
    group_of = np.array(
        [
            groups.setdefault((n.model, n.gpus, n.cpu_milli, n.memory_mib), len(groups))
            for n in nodes
        ],
        dtype=np.int64,
    )
    group_rep = np.array([int(np.flatnonzero(group_of == g)[0]) for g in range(len(groups))])

    creation: dict[str, float] = {}
    deadlines: dict[str, float] = {}
    requests: list[PodRequest] = []
    loads = service_loads or {}
    # a measured service's (mean, upper) % of a reference GPU as it runs, per GPU held
    measured: dict[int, tuple[float, float]] = {}
    for index, (pod, kind) in enumerate(zip(pods, kinds, strict=True)):
        run_seconds = pod.trace_run_seconds / compression
        creation[pod.name] = pod.creation_seconds / compression
        share = min(pod.gpu_milli, FULL_GPU_MILLI) / FULL_GPU_MILLI if pod.num_gpu > 0 else 0.0
        demand_percent = 100.0 * u_ref_full * share
        load = loads.get(pod.name) if kind == SERVICE else None
        if load is not None:
            measured[index] = (100.0 * load.actual_mean * share, 100.0 * load.actual_upper * share)
            if config.forecast_services:
                demand_percent = load.demand_percent * share
        if kind == BATCH and config.deadline_factor > 0 and pod.num_gpu > 0:
            deadlines[pod.name] = creation[pod.name] + config.deadline_factor * run_seconds
        requests.append(
            PodRequest(
                name=pod.name,
                cpu_milli=pod.cpu_milli,
                memory_mib=pod.memory_mib,
                num_gpu=pod.num_gpu,
                gpu_milli=pod.gpu_milli,
                gpu_models=tuple(dict.fromkeys(config.model_map.get(m, m) for m in pod.gpu_spec)),
                kind=kind,
                work_reference_gpu_hours=pod.num_gpu * run_seconds * trace_speed / SECONDS_PER_HOUR
                if kind == BATCH
                else 0.0,
                reference_utilization_percent=demand_percent if kind == SERVICE else 0.0,
                lifetime_seconds=run_seconds if kind == SERVICE else None,
                deadline_seconds=deadlines.get(pod.name),
            )
        )

    # events: (time, order, seq, kind, index); completions and removals before arrivals
    FINISH, READY, IDLE, ARRIVE = 0, 1, 2, 3  # noqa: N806
    events: list[tuple[float, int, int, int, int]] = [
        (creation[p.name], ARRIVE, i, ARRIVE, i) for i, p in enumerate(pods)
    ]
    heapq.heapify(events)
    seq = len(pods)
    queued = np.zeros(len(pods), dtype=bool)
    reserved_on = np.full(len(pods), -1, dtype=np.int64)
    placements: list[Placement | None] = [None] * len(pods)
    claims: dict[int, tuple[int, list[tuple[int, int]], float]] = {}
    booting = np.zeros(n_nodes, dtype=bool)
    # virtual room on nodes being added: what pending pods already count on
    v_cpu = np.zeros(n_nodes, dtype=np.int64)
    v_mem = np.zeros(n_nodes, dtype=np.int64)
    v_gpu = np.zeros(n_nodes, dtype=np.int64)  # milli, whole GPUs and shares alike
    on_since = np.zeros(n_nodes)
    empty_since = np.zeros(n_nodes)
    intervals: list[tuple[int, float, float]] = []
    nodes_added = 0
    last_event = 0.0
    table.powered[:] = not autoscaled

    def push(when: float, kind: int, i: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (when, kind, seq, kind, i))

    def fits_mask(i: int) -> Any:
        fits = (table.cpu_capacity - table.cpu_used >= req.cpu[i]) & (
            table.memory_capacity - table.memory_used >= req.mem[i]
        )
        if req.gpus[i] > 0:
            if req.shares[i]:
                fits &= table.gpu_free_milli.max(axis=1) >= req.milli[i]
            else:
                fits &= (table.gpu_free_milli == FULL_GPU_MILLI).sum(axis=1) >= req.gpus[i]
        return fits & req.allowed[req.spec_id[i]]

    def take_gpus(node: int, i: int) -> list[tuple[int, int]]:
        """Claim GPU slots: whole free GPUs, or the fullest GPU that fits a share."""
        if req.gpus[i] <= 0:
            return []
        row = table.gpu_free_milli[node]
        if req.shares[i]:
            milli = int(req.milli[i])
            candidates = np.flatnonzero(row >= milli)
            slot = int(candidates[np.argmin(row[candidates])])  # best fit, as GPU-share packs
            row[slot] -= milli
            return [(slot, milli)]
        slots = np.flatnonzero(row == FULL_GPU_MILLI)[: int(req.gpus[i])]
        row[slots] = 0
        return [(int(s), FULL_GPU_MILLI) for s in slots]

    def try_place(i: int, now: float) -> bool:
        fits = fits_mask(i) & table.powered
        if not fits.any():
            return False
        node = policy.choose(table, fits, requests[i], now)
        if node is None:
            return False
        pod = pods[i]
        claimed = take_gpus(node, i)
        table.cpu_used[node] += pod.cpu_milli
        table.memory_used[node] += pod.memory_mib
        table.pods[node] += 1
        model = table.models[node]
        run = runs[model]
        share = pod.gpu_share
        run_seconds = pod.trace_run_seconds / compression
        utilization, above, busy = 1.0, False, share
        if kinds[i] == SERVICE:
            dynamic = 0.0
            if pod.num_gpu > 0:
                per_gpu_share = share / pod.num_gpu
                mean_percent, upper_percent = measured.get(
                    i, (requests[i].reference_utilization_percent,) * 2
                )
                profile = get_profile(model)
                utilization = service_utilization(profile, mean_percent, run.limit_watts)
                peak = service_utilization(profile, upper_percent, run.limit_watts)
                above = peak > target * per_gpu_share + 1e-12
                busy = pod.num_gpu * min(1.0, utilization)
                dynamic = busy * run.dynamic_watts_per_gpu
        else:
            if pod.num_gpu > 0:
                run_seconds = run_seconds * trace_speed / run.speed
            dynamic = share * run.dynamic_watts_per_gpu
        table.gpu_busy[node] += busy
        placements[i] = Placement(
            pod=pod.name,
            node=table.names[node],
            model=model,
            start_seconds=now,
            end_seconds=now + run_seconds,
            gpu_share=share,
            dynamic_watts=dynamic,
            kind=kinds[i],
            utilization=utilization,
            above_target=above,
        )
        claims[i] = (node, claimed, busy)
        queued[i] = False
        reserved_on[i] = -1
        push(now + run_seconds, FINISH, i)
        return True

    def place_queued_on(node: int, now: float) -> None:
        """Queued pods (oldest first) that the capacity ``node`` now has may fit."""
        if not queued.any() or not table.powered[node]:
            return
        free_cpu = table.cpu_capacity[node] - table.cpu_used[node]
        free_mem = table.memory_capacity[node] - table.memory_used[node]
        row = table.gpu_free_milli[node]
        whole = int((row == FULL_GPU_MILLI).sum())
        best_share = int(row.max())
        gpu_ok = np.where(
            req.gpus == 0, True, np.where(req.shares, req.milli <= best_share, req.gpus <= whole)
        )
        maybe = (
            queued
            & (req.cpu <= free_cpu)
            & (req.mem <= free_mem)
            & gpu_ok
            & req.allowed[req.spec_id, node]
        )
        for i in np.flatnonzero(maybe).tolist():
            if fits_on(i, node):
                try_place(i, now)

    def fits_on(i: int, node: int) -> bool:
        if req.cpu[i] > table.cpu_capacity[node] - table.cpu_used[node]:
            return False
        if req.mem[i] > table.memory_capacity[node] - table.memory_used[node]:
            return False
        if req.gpus[i] == 0:
            return True
        row = table.gpu_free_milli[node]
        if req.shares[i]:
            return bool(row.max() >= req.milli[i])
        return bool((row == FULL_GPU_MILLI).sum() >= req.gpus[i])

    def fits_empty(i: int, node: int) -> bool:
        return bool(
            req.cpu[i] <= table.cpu_capacity[node]
            and req.mem[i] <= table.memory_capacity[node]
            and (
                req.gpus[i] == 0
                or (req.shares[i] and table.gpus[node] >= 1)
                or req.gpus[i] <= table.gpus[node]
            )
            and req.allowed[req.spec_id[i], node]
        )

    def gpu_milli_of(i: int) -> int:
        return int(req.gpus[i] * min(int(req.milli[i]), FULL_GPU_MILLI)) if req.gpus[i] else 0

    def scale_up(i: int, now: float) -> None:
        """cluster-autoscaler for one pending pod: count on a node being added, or add one."""
        nonlocal nodes_added
        if reserved_on[i] >= 0:
            return
        need_gpu = gpu_milli_of(i)
        room = booting & (v_cpu >= req.cpu[i]) & (v_mem >= req.mem[i]) & (v_gpu >= need_gpu)
        room &= req.allowed[req.spec_id[i]]
        candidates = np.flatnonzero(room)
        if len(candidates):
            node = int(candidates[0])
        else:
            off = ~table.powered & ~booting
            options = [g for g, rep in enumerate(group_rep.tolist()) if fits_empty(i, rep)]
            options = [g for g in options if (off & (group_of == g)).any()]
            if not options:
                return  # nothing to add: the pod waits for room
            if config.expander == "least-waste":
                reps = group_rep[options]
                waste = (table.cpu_capacity[reps] - req.cpu[i]) / table.cpu_capacity[reps] + (
                    table.memory_capacity[reps] - req.mem[i]
                ) / table.memory_capacity[reps]
                best = [g for g, w in zip(options, waste, strict=True) if w <= waste.min() + 1e-12]
            else:
                best = options
            group = best[int(rng.integers(len(best)))] if len(best) > 1 else best[0]
            node = int(np.flatnonzero(off & (group_of == group))[0])
            booting[node] = True
            nodes_added += 1
            on_since[node] = now
            v_cpu[node] = table.cpu_capacity[node]
            v_mem[node] = table.memory_capacity[node]
            v_gpu[node] = table.gpus[node] * FULL_GPU_MILLI
            push(now + delay, READY, node)
        reserved_on[i] = node
        v_cpu[node] -= req.cpu[i]
        v_mem[node] -= req.mem[i]
        v_gpu[node] -= need_gpu

    def scale_up_pending(now: float) -> None:
        for i in np.flatnonzero(queued & (reserved_on < 0)).tolist():
            scale_up(i, now)

    while events:
        now, _, _, event, i = heapq.heappop(events)
        last_event = max(last_event, now)
        if event == ARRIVE:
            if not try_place(i, now):
                queued[i] = True
                if autoscaled and not (fits_mask(i) & table.powered).any():
                    # the autoscaler sees a pod no powered node fits (it does not
                    # know the Lepton scheduler's filter: a pod only it rejects waits)
                    scale_up(i, now)
            continue
        if event == FINISH:
            node, claimed, busy = claims.pop(i)
            pod = pods[i]
            for slot, milli in claimed:
                table.gpu_free_milli[node, slot] += milli
            table.cpu_used[node] -= pod.cpu_milli
            table.memory_used[node] -= pod.memory_mib
            table.pods[node] -= 1
            table.gpu_busy[node] -= busy
            place_queued_on(node, now)
            if autoscaled and table.pods[node] == 0:
                empty_since[node] = now
                push(now + grace, IDLE, node)
            continue
        if event == READY:
            node = i
            booting[node] = False
            table.powered[node] = True
            reserved_on[reserved_on == node] = -1
            place_queued_on(node, now)
            if table.pods[node] == 0:
                empty_since[node] = now
                push(now + grace, IDLE, node)
            scale_up_pending(now)
            continue
        # IDLE: remove a node that stayed empty for the whole grace period
        node = i
        if (
            table.powered[node]
            and table.pods[node] == 0
            and now >= empty_since[node] + grace - 1e-9
        ):
            table.powered[node] = False
            intervals.append((node, float(on_since[node]), now))
            if queued.any():
                scale_up_pending(now)

    trace_end = max((p.deletion_seconds for p in pods), default=0.0) / compression
    if not autoscaled:
        intervals = [(n, 0.0, max(trace_end, last_event)) for n in range(n_nodes)]
    for node in np.flatnonzero(table.powered | booting).tolist() if autoscaled else ():
        intervals.append((node, float(on_since[node]), last_event))  # none, normally

    placed = [p for p in placements if p is not None]
    work_gpu_hours = sum(p.gpu_share * p.trace_run_seconds for p in pods) / compression / 3600
    return SimResult(
        policy=policy_name,
        config=config,
        trace_speed=trace_speed,
        nodes=n_nodes,
        gpus=int(table.gpus.sum()),
        pods=len(pods),
        placements=placed,
        unscheduled=[pods[q].name for q in np.flatnonzero(queued).tolist()],
        creation_seconds=creation,
        deadline_seconds=deadlines,
        horizon_seconds=last_event,
        trace_end_seconds=trace_end,
        last_arrival_seconds=max(creation.values(), default=0.0),
        window_start_seconds=_warmup_end(sorted(creation.values()), config.warmup_fraction),
        dynamic_joules=sum(p.dynamic_watts * (p.end_seconds - p.start_seconds) for p in placed),
        fleet_idle_watts=float(idle_watts.sum()),
        nodes_added=nodes_added,
        work_gpu_hours=work_gpu_hours,
        wall_seconds=time.perf_counter() - started,
        power_intervals=[
            (table.names[n], on, off, float(idle_watts[n])) for n, on, off in intervals
        ],
        node_gpus={n.name: n.gpus for n in nodes},
    )
