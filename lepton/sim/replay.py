"""The pure half of the real replay: one trace slice, priced like the simulator prices it.

Issue 7 asks whether the simulator's prediction holds on a real control plane:
a slice of the Alibaba trace is replayed, time-compressed, through the real
kube-scheduler (default profile, or the ``lepton-scheduler`` profile with
Lepton's extender) over a kwok fleet, and the simulator runs the very same
slice. This module holds every decision the two runs must share, so that they
cannot drift apart:

* which pods (:func:`trace_slice`) and how fast (:func:`compression_for`);
* the fractional-GPU rule (:func:`whole_gpu_pods`): Kubernetes has no fractional
  ``nvidia.com/gpu``, so a trace pod asking for part of one GPU asks for a whole
  one, and is accounted as holding a whole one — in both runs;
* the pod a trace record becomes (:func:`pod_manifest`), with the Lepton hints
  the simulator's Lepton policy passes to the scorer (:func:`request_for`);
* how long a pod runs on the GPU it got and what it draws
  (:func:`placement_for`), from the engine's own per-model figures;
* the energy, by the simulator's accounting (:mod:`lepton.sim.energy_account`).

The I/O driver that talks to the cluster is :mod:`lepton.cluster.replay` (the
simulator package imports the core only). Every energy is a **model estimate**
from real placements, not a measurement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from lepton.core.energy import SECONDS_PER_HOUR, node_idle_watts
from lepton.core.hints import EnergyPolicy, JobHints, hints_to_annotations
from lepton.core.names import LABEL_JOB_NAME
from lepton.core.profiles import get_profile

from .energy_account import account_energy
from .engine import (
    DEFAULT_SCALE_IN_GRACE_SECONDS,
    Placement,
    SimConfig,
    fleet_mean_speed,
    model_runs,
    simulate,
)
from .policies import POWER_CAP, LeptonPolicy, PodRequest, PolicyName
from .trace import BATCH, DEFAULT_KIND_MAP, FULL_GPU_MILLI, TraceNode, TracePod

# The schedulers a real cluster can run: kube-scheduler's default profile, and the
# lepton-scheduler profile + extender (scheduler/lepton_scheduler/kube-scheduler-config.yaml).
REPLAY_POLICIES: tuple[PolicyName, ...] = (
    PolicyName.DEFAULT_SCHEDULER,
    PolicyName.LEPTON_BALANCED,
    PolicyName.LEPTON_EFFICIENCY,
)
LEPTON_SCHEDULER_NAME = "lepton-scheduler"
LABEL_REPLAY = "lepton.dev/replay"
GPU_RESOURCE = "nvidia.com/gpu"
# Real pods of a slice arrive in bursts; the extender on a 2-core machine places
# 20-50 pods/s, so a slice's busiest second should stay well below that.
MAX_PEAK_ARRIVALS_PER_SECOND = 20


class ReplayError(ValueError):
    """A slice cannot be replayed as asked; the message says how to change it."""


def whole_gpu_pods(pods: Sequence[TracePod]) -> list[TracePod]:
    """The fractional-GPU rule: a pod holding part of one GPU holds the whole GPU.

    Kubernetes counts ``nvidia.com/gpu`` in whole devices, so the real replay
    requests one GPU for it; the simulator it is compared with gets the same
    pods, so that it, too, gives the pod a whole GPU and charges its full
    active power.
    """
    return [
        dataclasses.replace(p, gpu_milli=FULL_GPU_MILLI)
        if p.num_gpu > 0 and p.gpu_milli < FULL_GPU_MILLI
        else p
        for p in pods
    ]


def trace_slice(pods: Sequence[TracePod], first: int, count: int) -> list[TracePod]:
    """``count`` pods in creation order from index ``first``, timed from the first's creation."""
    chosen = list(pods[first : first + count])
    if not chosen:
        raise ReplayError(
            f"no pods at index {first} (the trace has {len(pods)}): choose a smaller first index"
        )
    origin = chosen[0].creation_seconds
    return [
        dataclasses.replace(
            p,
            name=p.name.lower(),
            creation_seconds=p.creation_seconds - origin,
            start_seconds=p.start_seconds - origin,
            deletion_seconds=p.deletion_seconds - origin,
        )
        for p in chosen
    ]


def compression_for(pods: Sequence[TracePod], arrival_seconds: float) -> float:
    """The time compression that makes the slice's arrivals span ``arrival_seconds``."""
    span = max((p.creation_seconds for p in pods), default=0.0) - min(
        (p.creation_seconds for p in pods), default=0.0
    )
    if span <= 0 or arrival_seconds <= 0:
        return 1.0
    return span / arrival_seconds


def peak_arrivals_per_second(pods: Sequence[TracePod], compression: float) -> int:
    """The most pods created within any one second of the compressed replay."""
    times = sorted(p.creation_seconds / compression for p in pods)
    peak, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > 1.0:
            lo += 1
        peak = max(peak, hi - lo + 1)
    return peak


@dataclass(frozen=True)
class ReplaySettings:
    """What both runs of one slice share; every field is printed beside the results."""

    time_compression: float
    window_end_seconds: float  # compressed; the replay stops and the accounting ends here
    model_map: Mapping[str, str]
    seed: int = 0
    # cluster-autoscaler's 600 s, in compressed time, so that it means what it means
    # on the uncompressed trace
    scale_in_grace_seconds: float = DEFAULT_SCALE_IN_GRACE_SECONDS
    # No deadlines by default: compressed, a short pod's slack (0.5x a run of a few
    # milliseconds) is shorter than a real scheduler's latency, so every pod would
    # miss its deadline in the replay and none in the simulator (which places at once).
    deadline_factor: float = 0.0

    @property
    def compressed_grace_seconds(self) -> float:
        return self.scale_in_grace_seconds / self.time_compression

    def sim_config(self, trace_speed: float | None = None) -> SimConfig:
        """The simulator's configuration for the same slice."""
        # The replay still runs the earlier model: every kwok node exists (no
        # autoscaler: the simulator's always-on placement, scale-in energy from the
        # placements by energy_account) and every trace pod is a batch job.
        return SimConfig(
            seed=self.seed,
            model_map=dict(self.model_map),
            kind_map=REPLAY_KIND_MAP,
            trace_speed=trace_speed,
            regime="always_on",
            scale_in_grace_seconds=self.compressed_grace_seconds,
            deadline_factor=self.deadline_factor,
            time_compression=self.time_compression,
            window="run",
        )


REPLAY_KIND_MAP = {qos: BATCH for qos in DEFAULT_KIND_MAP}


def request_for(pod: TracePod, config: SimConfig, trace_speed: float) -> PodRequest:
    """What the simulator's policies see of ``pod`` (as :func:`lepton.sim.engine.simulate`)."""
    compression = config.time_compression or 1.0
    run_seconds = pod.trace_run_seconds / compression
    creation = pod.creation_seconds / compression
    deadline = None
    if config.deadline_factor > 0 and pod.num_gpu > 0:
        deadline = creation + config.deadline_factor * run_seconds
    return PodRequest(
        name=pod.name,
        cpu_milli=pod.cpu_milli,
        memory_mib=pod.memory_mib,
        num_gpu=pod.num_gpu,
        gpu_milli=pod.gpu_milli,
        work_reference_gpu_hours=max(1, pod.num_gpu) * run_seconds * trace_speed / SECONDS_PER_HOUR,
        gpu_models=tuple(dict.fromkeys(config.model_map.get(m, m) for m in pod.gpu_spec)),
        deadline_seconds=deadline,
    )


def hints_for(policy: PolicyName, request: PodRequest, epoch: datetime) -> JobHints:
    """The hints the simulator's Lepton policy scores ``request`` with, deadline on ``epoch``."""
    energy_policy = energy_policy_of(policy)
    if energy_policy is None:
        raise ReplayError(f"policy {policy} passes no Lepton hints: choose a lepton-* policy")
    hints = LeptonPolicy(policy, energy_policy, np.random.default_rng(0)).hints(request)
    if hints.deadline_time is not None and request.deadline_seconds is not None:
        hints = dataclasses.replace(
            hints, deadline_time=epoch + timedelta(seconds=request.deadline_seconds)
        )
    return hints


def pod_manifest(
    pod: TracePod,
    policy: PolicyName,
    namespace: str,
    config: SimConfig,
    trace_speed: float,
    epoch: datetime,
) -> dict[str, Any]:
    """The v1.Pod a trace record becomes: its requests, and for Lepton its hints.

    ``epoch`` is the wall-clock instant of replay second 0 (deadlines are absolute).
    The GPU request follows :func:`whole_gpu_pods` (fractions are refused here).
    """
    if pod.num_gpu > 0 and pod.gpu_milli < FULL_GPU_MILLI:
        raise ReplayError(
            f"pod {pod.name} asks for {pod.gpu_milli} milli-GPU: Kubernetes counts whole GPUs; "
            "pass the slice through whole_gpu_pods() first"
        )
    if pod.gpu_spec:
        raise ReplayError(
            f"pod {pod.name} restricts GPU models to {pod.gpu_spec}: the replay does not "
            "carry gpu_spec yet; choose a slice without it"
        )
    resources: dict[str, Any] = {
        "requests": {"cpu": f"{pod.cpu_milli}m", "memory": f"{pod.memory_mib}Mi"}
    }
    if pod.num_gpu > 0:
        resources["limits"] = {GPU_RESOURCE: str(pod.num_gpu)}
    metadata: dict[str, Any] = {
        "name": pod.name,
        "namespace": namespace,
        "labels": {LABEL_REPLAY: str(policy)},
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "work", "image": "lepton.dev/replay", "resources": resources}],
    }
    if policy in (PolicyName.LEPTON_BALANCED, PolicyName.LEPTON_EFFICIENCY):
        hints = hints_for(policy, request_for(pod, config, trace_speed), epoch)
        metadata["labels"][LABEL_JOB_NAME] = pod.name
        metadata["annotations"] = hints_to_annotations(hints)
        spec["schedulerName"] = LEPTON_SCHEDULER_NAME
    elif policy is not PolicyName.DEFAULT_SCHEDULER:
        raise ReplayError(f"policy {policy} has no real scheduler: choose one of {REPLAY_POLICIES}")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def energy_policy_of(policy: PolicyName) -> EnergyPolicy | None:
    return {
        PolicyName.LEPTON_BALANCED: EnergyPolicy.BALANCED,
        PolicyName.LEPTON_EFFICIENCY: EnergyPolicy.EFFICIENCY,
    }.get(policy)


def placement_for(
    pod: TracePod,
    node: str,
    model: str,
    start_seconds: float,
    policy: PolicyName,
    config: SimConfig,
    trace_speed: float,
) -> Placement:
    """A pod observed starting on ``node`` (GPU ``model``): its modelled run and power.

    The same arithmetic as :func:`lepton.sim.engine.simulate`: the trace runtime
    (compressed) scaled by the trace's GPU speed over this GPU's speed under the
    policy's power limit, and ``share x (P_busy - P_idle)`` of that GPU.
    """
    run = model_runs({model}, POWER_CAP[policy])[model]
    run_seconds = pod.trace_run_seconds / (config.time_compression or 1.0)
    if pod.num_gpu > 0:
        run_seconds = run_seconds * trace_speed / run.speed
    return Placement(
        pod=pod.name,
        node=node,
        model=model,
        start_seconds=start_seconds,
        end_seconds=start_seconds + run_seconds,
        gpu_share=pod.gpu_share,
        dynamic_watts=pod.gpu_share * run.dynamic_watts_per_gpu,
    )


def relative_difference(real: float, simulated: float) -> float:
    """``(real - simulated) / simulated``; 0 when both are 0."""
    if simulated == 0:
        return 0.0 if real == 0 else float("inf")
    return (real - simulated) / simulated


def ranking(energies: Mapping[str, float]) -> list[str]:
    """Policies from the least energy to the most (ties keep the given order)."""
    return sorted(energies, key=lambda name: energies[name])


@dataclass
class ObservedRun:
    """What the real replay saw under one scheduler: where and when each pod started."""

    policy: PolicyName
    starts: dict[str, tuple[str, float]]  # pod -> (node, replay seconds when seen bound)
    unscheduled: list[str]
    wall_seconds: float
    # replay seconds from a pod's planned creation to its creation / to its binding
    creation_lag_seconds: list[float] = dataclasses.field(default_factory=list)
    binding_lag_seconds: list[float] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float]:
            if not values:
                return {"mean": 0.0, "p95": 0.0, "max": 0.0}
            ordered = sorted(values)
            return {
                "mean": sum(ordered) / len(ordered),
                "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
                "max": ordered[-1],
            }

        return {
            "placed": len(self.starts),
            "unscheduled": len(self.unscheduled),
            "wallSeconds": self.wall_seconds,
            "creationLagSeconds": stats(self.creation_lag_seconds),
            "bindingLagSeconds": stats(self.binding_lag_seconds),
        }


# Two policies whose simulated energies differ by less than this are a tie: the
# replay is not asked to order them (random tie-breaking alone moves energy this much).
RANKING_TIE_TOLERANCE = 0.01
BAR_ENERGY_AGREEMENT = 0.05  # issue 7: the real replay within 5 % of the simulator


def same_ranking(
    real: Mapping[str, float], simulated: Mapping[str, float], tolerance: float
) -> bool:
    """True when every pair of policies the simulator separates is ordered alike by the replay."""
    names = [n for n in simulated if n in real]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            gap = relative_difference(simulated[a], simulated[b])
            if abs(gap) <= tolerance:
                continue
            if (real[a] < real[b]) != (simulated[a] < simulated[b]):
                return False
    return True


def node_idle_watts_by_name(
    nodes: Sequence[TraceNode], model_map: Mapping[str, str]
) -> dict[str, float]:
    """Each node's idle power (host + GPUs), as the engine charges it."""
    return {
        n.name: node_idle_watts(get_profile(model_map.get(n.model, n.model)), n.gpus) for n in nodes
    }


def compare(
    pods: Sequence[TracePod],
    nodes: Sequence[TraceNode],
    settings: ReplaySettings,
    observed: Mapping[PolicyName, ObservedRun],
    seeds: Sequence[int] = (0,),
) -> dict[str, Any]:
    """Price the observed placements and the simulator's for the same slice; JSON-ready.

    ``pods`` are the slice as replayed (after :func:`whole_gpu_pods`). Both sides
    are accounted by :func:`lepton.sim.energy_account.account_energy` over the
    same window with the same grace period. The simulator runs once per seed (its
    random tie-breaking, as kube-scheduler's, is the noise a single real run
    carries too): its prediction is the mean, reported with the seeds' range.
    """
    model_map = dict(settings.model_map)
    trace_speed = fleet_mean_speed(nodes, model_map)
    idle = node_idle_watts_by_name(nodes, model_map)
    models = {n.name: model_map.get(n.model, n.model) for n in nodes}
    by_name = {p.name: p for p in pods}
    window = settings.window_end_seconds
    grace = settings.compressed_grace_seconds
    config = settings.sim_config(trace_speed)
    rows: dict[str, dict[str, Any]] = {}
    for policy, run in observed.items():
        real_placements = [
            placement_for(by_name[pod], node, models[node], start, policy, config, trace_speed)
            for pod, (node, start) in run.starts.items()
        ]
        real = account_energy(real_placements, idle, window, grace)
        per_seed = []
        for seed in seeds or (settings.seed,):
            result = simulate(pods, nodes, policy, dataclasses.replace(config, seed=seed))
            account = account_energy(result.placements, idle, window, grace)
            per_seed.append(
                account.as_dict()
                | {
                    "seed": seed,
                    "placed": len(result.placements),
                    "unscheduled": len(result.unscheduled),
                    "nodesUsed": len({p.node for p in result.placements}),
                }
            )
        simulated: dict[str, Any] = {
            key: sum(s[key] for s in per_seed) / len(per_seed)
            for key in per_seed[0]
            if key != "seed"
        }
        for key in ("scaleInWattHours", "alwaysOnWattHours"):
            simulated[f"{key}Range"] = [
                min(s[key] for s in per_seed),
                max(s[key] for s in per_seed),
            ]
        low, high = simulated["scaleInWattHoursRange"]
        rows[str(policy)] = {
            "real": real.as_dict()
            | run.as_dict()
            | {"nodesUsed": len({p.node for p in real_placements})},
            "simulated": simulated | {"seeds": per_seed},
            "scaleInDifference": relative_difference(
                real.scale_in_joules / 3600, simulated["scaleInWattHours"]
            ),
            "alwaysOnDifference": relative_difference(
                real.always_on_joules / 3600, simulated["alwaysOnWattHours"]
            ),
            "dynamicDifference": relative_difference(
                real.dynamic_joules / 3600, simulated["dynamicWattHours"]
            ),
            "scaleInWithinSeedRange": low <= real.scale_in_joules / 3600 <= high,
        }
    verdict: dict[str, Any] = {}
    for regime in ("scaleIn", "alwaysOn"):
        real_e = {p: r["real"][f"{regime}WattHours"] for p, r in rows.items()}
        sim_e = {p: r["simulated"][f"{regime}WattHours"] for p, r in rows.items()}
        worst = max((abs(r[f"{regime}Difference"]) for r in rows.values()), default=0.0)
        verdict[regime] = {
            "realRanking": ranking(real_e),
            "simulatedRanking": ranking(sim_e),
            "sameRanking": same_ranking(real_e, sim_e, RANKING_TIE_TOLERANCE),
            "largestDifference": worst,
            "withinBar": worst <= BAR_ENERGY_AGREEMENT,
        }
    return {
        "kind": "model estimates from real placements (replay) and from the simulator; "
        "not measurements",
        "settings": {
            "timeCompression": settings.time_compression,
            "windowEndSeconds": window,
            "scaleInGraceSeconds": grace,
            "modelMap": model_map,
            "traceSpeed": trace_speed,
            "seeds": list(seeds),
            "deadlineFactor": settings.deadline_factor,
            "fractionalGpuRule": "a pod asking for part of a GPU holds a whole GPU (both runs)",
            "rankingTieTolerance": RANKING_TIE_TOLERANCE,
            "energyAgreementBar": BAR_ENERGY_AGREEMENT,
        },
        "slice": {
            "pods": len(pods),
            "gpuPods": sum(1 for p in pods if p.num_gpu > 0),
            "nodes": len(nodes),
            "gpus": sum(n.gpus for n in nodes),
        },
        "policies": rows,
        "verdict": verdict,
    }
