"""The event-driven replay: pods arrive, wait, run and leave; nodes power up and down.

One run replays a trace under one policy. A clock jumps from event to event
(arrivals at ``creation_time``, completions); a pod that fits no node waits in
a FIFO queue and is retried whenever a pod leaves. Placement is the policy's
(:mod:`lepton.sim.policies`); how long a pod runs and what it draws come from
the core's GPU profiles and energy model, so that the simulator, the extender
and the operator share one picture of a GPU.

Energy is worked out after the replay from the intervals it produced, for two
regimes at once (placement does not depend on the regime):

* ``always_on`` — every node of the fleet draws its idle power over the whole
  horizon (trace start to the later of the trace's end and the last completion);
* ``scale_in`` — a node draws idle power from the moment a pod lands on it until
  ``scale_in_grace_seconds`` after its last pod left (cluster-autoscaler's
  ``scale-down-unneeded-time`` default of 10 minutes); it is woken at once when
  a pod is placed on it (no boot delay: optimistic for every policy alike).

On top of idle power each running pod adds its GPUs' active power at the
policy's power limit: ``share · (P_busy(model, limit) - P_idle(model))``.
Every figure is a **model estimate**, not a measurement.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton.core.energy import SECONDS_PER_HOUR, chosen_power_limit_watts, node_idle_watts
from lepton.core.profiles import get_profile

from .policies import (
    POWER_CAP,
    NodeTable,
    PodRequest,
    PolicyName,
    make_policy,
)
from .trace import FULL_GPU_MILLI, TraceNode, TracePod

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
DEFAULT_DEADLINE_FACTOR = 1.5  # assumed: a pod's deadline is 1.5x its trace runtime
DEFAULT_CHART_BIN_SECONDS = 86_400.0


@dataclass(frozen=True)
class SimConfig:
    """Every assumption the trace does not fix; printed beside every result."""

    seed: int = 0
    model_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MODEL_MAP))
    # Speed (relative to the A40) of the GPU each pod ran on in the trace; the trace
    # does not say which it was. None = the fleet's GPU-weighted mean speed.
    trace_speed: float | None = None
    scale_in_grace_seconds: float = DEFAULT_SCALE_IN_GRACE_SECONDS
    deadline_factor: float = DEFAULT_DEADLINE_FACTOR
    # Divide every trace time by this (a slice replayed faster on a real cluster).
    time_compression: float = 1.0
    # kube-scheduler's percentageOfNodesToScore for the emulated profiles (0 = adaptive)
    percentage_of_nodes_to_score: int = 0
    chart_bin_seconds: float = DEFAULT_CHART_BIN_SECONDS

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "modelMap": dict(self.model_map),
            "traceSpeed": self.trace_speed,
            "scaleInGraceSeconds": self.scale_in_grace_seconds,
            "deadlineFactor": self.deadline_factor,
            "timeCompression": self.time_compression,
            "percentageOfNodesToScore": self.percentage_of_nodes_to_score,
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


@dataclass
class SimResult:
    """One policy's replay: per-pod outcomes, energy in both regimes, timings."""

    policy: PolicyName
    config: SimConfig
    trace_speed: float
    nodes: int
    pods: int
    placements: list[Placement]
    unscheduled: list[str]
    creation_seconds: dict[str, float]
    deadline_seconds: dict[str, float]
    horizon_seconds: float
    trace_end_seconds: float
    dynamic_joules: float
    idle_always_on_joules: float
    idle_scale_in_joules: float
    node_seconds_scale_in: float
    work_gpu_hours: float  # GPU-hours the trace's pods held (the unit of work)
    wall_seconds: float
    bins_seconds: list[float]
    bins_always_on_joules: list[float]
    bins_scale_in_joules: list[float]

    def metrics(self, common_horizon_seconds: float | None = None) -> dict[str, Any]:
        """The headline figures, JSON-ready (energy in kWh, times in seconds).

        ``common_horizon_seconds`` charges the always-on fleet's idle power over
        the same window for every compared policy (the benchmark uses the
        trace's own window): the cluster exists for the same calendar time
        whichever scheduler runs it. Dynamic energy is always counted in full.
        """
        horizon = (
            common_horizon_seconds if common_horizon_seconds is not None else self.horizon_seconds
        )
        idle_always_on = self.idle_always_on_joules / max(self.horizon_seconds, 1e-9) * horizon
        jct = np.array(
            [p.end_seconds - self.creation_seconds[p.pod] for p in self.placements], dtype=float
        )
        wait = np.array(
            [p.start_seconds - self.creation_seconds[p.pod] for p in self.placements], dtype=float
        )
        misses = sum(
            1
            for p in self.placements
            if p.pod in self.deadline_seconds and p.end_seconds > self.deadline_seconds[p.pod]
        )

        def pct(values: np.ndarray[Any, Any], q: float) -> float:
            return float(np.percentile(values, q)) if len(values) else 0.0

        regimes = {}
        for regime, idle_joules, node_seconds in (
            ("always_on", idle_always_on, self.nodes * horizon),
            ("scale_in", self.idle_scale_in_joules, self.node_seconds_scale_in),
        ):
            total_kwh = (idle_joules + self.dynamic_joules) / 3.6e6
            regimes[regime] = {
                "energyKWh": total_kwh,
                "idleKWh": idle_joules / 3.6e6,
                "dynamicKWh": self.dynamic_joules / 3.6e6,
                "whPerGpuHour": total_kwh * 1000 / self.work_gpu_hours
                if self.work_gpu_hours
                else math.nan,
                "nodeHoursPowered": node_seconds / SECONDS_PER_HOUR,
            }
        return {
            "policy": str(self.policy),
            "pods": self.pods,
            "placed": len(self.placements),
            "unscheduled": len(self.unscheduled),
            "nodes": self.nodes,
            "horizonHours": horizon / SECONDS_PER_HOUR,
            "lastCompletionHours": self.horizon_seconds / SECONDS_PER_HOUR,
            "workGpuHours": self.work_gpu_hours,
            "traceSpeed": self.trace_speed,
            "meanJobCompletionSeconds": float(jct.mean()) if len(jct) else 0.0,
            "p95JobCompletionSeconds": pct(jct, 95),
            "meanQueueingSeconds": float(wait.mean()) if len(wait) else 0.0,
            "p95QueueingSeconds": pct(wait, 95),
            "deadlineMisses": misses,
            "wallSeconds": self.wall_seconds,
            "regimes": regimes,
        }


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
class _ModelRun:
    speed: float
    dynamic_watts_per_gpu: float  # P_busy at the limit minus P_idle


def _model_runs(models: set[str], power_cap: str) -> dict[str, _ModelRun]:
    runs = {}
    for model in models:
        profile = get_profile(model)
        limit = chosen_power_limit_watts(profile, power_cap)
        runs[model] = _ModelRun(
            speed=profile.speed_at(limit),
            dynamic_watts_per_gpu=profile.active_power_watts(1.0, limit) - profile.idle_watts,
        )
    return runs


def _fits(table: NodeTable, pod: TracePod, allowed: np.ndarray[Any, Any] | None) -> Any:
    fits = (table.cpu_capacity - table.cpu_used >= pod.cpu_milli) & (
        table.memory_capacity - table.memory_used >= pod.memory_mib
    )
    if pod.num_gpu > 0:
        if pod.shares_gpu:
            fits &= table.gpu_free_milli.max(axis=1) >= pod.gpu_milli
        else:
            fits &= (table.gpu_free_milli == FULL_GPU_MILLI).sum(axis=1) >= pod.num_gpu
    if allowed is not None:
        fits &= allowed
    return fits


def _take_gpus(table: NodeTable, node: int, pod: TracePod) -> list[tuple[int, int]]:
    """Claim GPU slots on ``node``: whole free GPUs, or the fullest GPU that fits a share."""
    if pod.num_gpu <= 0:
        return []
    row = table.gpu_free_milli[node]
    if pod.shares_gpu:
        candidates = np.flatnonzero(row >= pod.gpu_milli)
        slot = int(candidates[np.argmin(row[candidates])])  # best fit, as GPU-share bin-packs
        row[slot] -= pod.gpu_milli
        return [(slot, pod.gpu_milli)]
    slots = np.flatnonzero(row == FULL_GPU_MILLI)[: pod.num_gpu]
    row[slots] = 0
    return [(int(s), FULL_GPU_MILLI) for s in slots]


def simulate(
    pods: Sequence[TracePod],
    nodes: Sequence[TraceNode],
    policy_name: PolicyName,
    config: SimConfig | None = None,
) -> SimResult:
    """Replay ``pods`` on ``nodes`` under one policy."""
    config = config or SimConfig()
    started = time.perf_counter()
    compression = config.time_compression or 1.0
    table = build_table(nodes, config.model_map)
    policy = make_policy(policy_name, config.seed, config.percentage_of_nodes_to_score)
    trace_speed = config.trace_speed or fleet_mean_speed(nodes, config.model_map)
    runs = _model_runs(set(table.models), POWER_CAP[policy_name])
    idle_watts = np.array(
        [
            node_idle_watts(get_profile(m), int(g))
            for m, g in zip(table.models, table.gpus, strict=True)
        ]
    )
    trace_models = np.array(table.trace_models)
    allowed_cache: dict[tuple[str, ...], Any] = {}

    creation: dict[str, float] = {}
    deadlines: dict[str, float] = {}
    requests: list[PodRequest] = []
    for pod in pods:
        run_seconds = pod.trace_run_seconds / compression
        creation[pod.name] = pod.creation_seconds / compression
        if config.deadline_factor > 0 and pod.num_gpu > 0:
            deadlines[pod.name] = creation[pod.name] + config.deadline_factor * run_seconds
        gpus_for_work = max(1, pod.num_gpu)
        requests.append(
            PodRequest(
                name=pod.name,
                cpu_milli=pod.cpu_milli,
                memory_mib=pod.memory_mib,
                num_gpu=pod.num_gpu,
                gpu_milli=pod.gpu_milli,
                work_reference_gpu_hours=gpus_for_work
                * run_seconds
                * trace_speed
                / SECONDS_PER_HOUR,
                gpu_models=tuple(dict.fromkeys(config.model_map.get(m, m) for m in pod.gpu_spec)),
                deadline_seconds=deadlines.get(pod.name),
            )
        )

    # events: (time, order, seq, kind, index); completions (order 0) before arrivals (1)
    events: list[tuple[float, int, int, str, int]] = [
        (creation[p.name], 1, i, "arrive", i) for i, p in enumerate(pods)
    ]
    heapq.heapify(events)
    seq = len(pods)
    queue: list[int] = []
    placements: list[Placement | None] = [None] * len(pods)
    claims: dict[int, tuple[int, list[tuple[int, int]]]] = {}
    # scale-in bookkeeping: open power interval start, when the node last emptied
    power_on: dict[int, float] = {}
    emptied_at: dict[int, float] = {}
    intervals: list[tuple[int, float, float]] = []
    last_completion = 0.0

    def try_place(i: int, now: float) -> bool:
        nonlocal seq
        pod = pods[i]
        allowed = None
        if pod.gpu_spec:
            if pod.gpu_spec not in allowed_cache:
                allowed_cache[pod.gpu_spec] = np.isin(trace_models, pod.gpu_spec)
            allowed = allowed_cache[pod.gpu_spec]
        fits = _fits(table, pod, allowed)
        node = policy.choose(table, fits, requests[i], now)
        if node is None:
            return False
        claimed = _take_gpus(table, node, pod)
        table.cpu_used[node] += pod.cpu_milli
        table.memory_used[node] += pod.memory_mib
        table.pods[node] += 1
        model = table.models[node]
        run_seconds = pod.trace_run_seconds / compression
        if pod.num_gpu > 0:
            run_seconds = run_seconds * trace_speed / runs[model].speed
        share = pod.gpu_share
        placements[i] = Placement(
            pod=pod.name,
            node=table.names[node],
            model=model,
            start_seconds=now,
            end_seconds=now + run_seconds,
            gpu_share=share,
            dynamic_watts=share * runs[model].dynamic_watts_per_gpu,
        )
        claims[i] = (node, claimed)
        # power: wake the node, or keep it on if it emptied within the grace period
        if node not in power_on:
            power_on[node] = now
        elif node in emptied_at and now - emptied_at[node] > config.scale_in_grace_seconds:
            intervals.append(
                (node, power_on[node], emptied_at[node] + config.scale_in_grace_seconds)
            )
            power_on[node] = now
        emptied_at.pop(node, None)
        seq += 1
        heapq.heappush(events, (now + run_seconds, 0, seq, "finish", i))
        return True

    while events:
        now, _, _, kind, i = heapq.heappop(events)
        if kind == "arrive":
            if not try_place(i, now):
                queue.append(i)
            continue
        node, claimed = claims.pop(i)
        pod = pods[i]
        for slot, milli in claimed:
            table.gpu_free_milli[node, slot] += milli
        table.cpu_used[node] -= pod.cpu_milli
        table.memory_used[node] -= pod.memory_mib
        table.pods[node] -= 1
        if table.pods[node] == 0:
            emptied_at[node] = now
        last_completion = max(last_completion, now)
        if queue:
            queue = [q for q in queue if not try_place(q, now)]

    trace_end = max((p.deletion_seconds for p in pods), default=0.0) / compression
    horizon = max(trace_end, last_completion)
    for node, on in power_on.items():
        off = emptied_at.get(node, horizon) + config.scale_in_grace_seconds
        intervals.append((node, on, min(off, horizon)))

    placed = [p for p in placements if p is not None]
    work_gpu_hours = sum(p.gpu_share * p.trace_run_seconds for p in pods) / compression / 3600
    bins = _bins(
        placed,
        intervals,
        idle_watts,
        (horizon, trace_end),
        config.chart_bin_seconds,
        float(idle_watts.sum()),
    )
    return SimResult(
        policy=policy_name,
        config=config,
        trace_speed=trace_speed,
        nodes=len(nodes),
        pods=len(pods),
        placements=placed,
        unscheduled=[pods[q].name for q in queue],
        creation_seconds=creation,
        deadline_seconds=deadlines,
        horizon_seconds=horizon,
        trace_end_seconds=trace_end,
        dynamic_joules=sum(p.dynamic_watts * (p.end_seconds - p.start_seconds) for p in placed),
        idle_always_on_joules=float(idle_watts.sum()) * horizon,
        idle_scale_in_joules=sum(float(idle_watts[n]) * (off - on) for n, on, off in intervals),
        node_seconds_scale_in=sum(off - on for _, on, off in intervals),
        work_gpu_hours=work_gpu_hours,
        wall_seconds=time.perf_counter() - started,
        bins_seconds=bins[0],
        bins_always_on_joules=bins[1],
        bins_scale_in_joules=bins[2],
    )


def _energy_at(steps: list[tuple[float, float]], edges: np.ndarray[Any, Any]) -> Any:
    """Cumulative energy of a sum of power steps ``(time, ±watts)`` at each edge."""
    if not steps:
        return np.zeros(len(edges))
    steps.sort()
    times = np.array([t for t, _ in steps])
    power = np.cumsum([w for _, w in steps])
    energy = np.concatenate([[0.0], np.cumsum(power[:-1] * np.diff(times))])
    # between steps energy grows linearly at the power after the last step
    pos = np.searchsorted(times, edges, side="right") - 1
    pos = np.clip(pos, 0, len(times) - 1)
    base = np.where(edges < times[0], 0.0, energy[pos])
    slope = np.where(edges < times[0], 0.0, power[pos])
    return base + slope * (edges - np.where(edges < times[0], edges, times[pos]))


def _bins(
    placed: list[Placement],
    intervals: list[tuple[int, float, float]],
    idle_watts: np.ndarray[Any, Any],
    horizon_and_trace_end: tuple[float, float],
    bin_seconds: float,
    fleet_idle_watts: float,
) -> tuple[list[float], list[float], list[float]]:
    """Energy per time bin for the charts: (bin starts, always-on J, scale-in J).

    The always-on fleet's idle power is charged over the trace's window only, as
    in the metrics; dynamic energy wherever pods run.
    """
    horizon, trace_end = horizon_and_trace_end
    width = max(1.0, bin_seconds)
    edges = np.append(np.arange(0.0, horizon, width), horizon)
    dynamic_steps = [(p.start_seconds, p.dynamic_watts) for p in placed] + [
        (p.end_seconds, -p.dynamic_watts) for p in placed
    ]
    idle_steps = [(on, float(idle_watts[n])) for n, on, _ in intervals] + [
        (off, -float(idle_watts[n])) for n, _, off in intervals
    ]
    dynamic = np.diff(_energy_at(dynamic_steps, edges))
    idle = np.diff(_energy_at(idle_steps, edges))
    clipped = np.minimum(edges, trace_end)
    always_on_idle = fleet_idle_watts * np.diff(clipped)
    return (
        [float(x) for x in edges[:-1]],
        [float(x) for x in dynamic + always_on_idle],
        [float(x) for x in dynamic + idle],
    )
