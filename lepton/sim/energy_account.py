"""Energy of a set of placements, worked out after the fact: the simulator's accounting.

The real replay (:mod:`lepton.sim.replay`) observes where a real kube-scheduler
put each pod and must price those placements with the *same* model as the
simulator, or comparing the two would compare two energy models. This module
is that model as one pure function of the placements, mirroring what
:func:`lepton.sim.engine.simulate` accumulates during its replay:

* dynamic energy — each placement's ``dynamic_watts`` over its run;
* always on — every node of the fleet draws its idle power over the window;
* scale in — a node draws idle power from its first pod's start until
  ``scale_in_grace_seconds`` after it last emptied; an empty spell longer than
  the grace period switches it off until the next pod lands on it.

A test checks that, given a simulator run's placements and horizon, it returns
the simulator's own totals. ``window_end_seconds`` may also cut the window short
(the replay stops at a fixed horizon): runs and power intervals are clipped there.
Every figure is a **model estimate**, not a measurement.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lepton.core.metering import JOULES_PER_WATT_HOUR

from .engine import Placement

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class EnergyAccount:
    """Energy of one set of placements over ``[0, window_end_seconds]``, in joules."""

    window_end_seconds: float
    dynamic_joules: float
    idle_always_on_joules: float
    idle_scale_in_joules: float
    node_seconds_scale_in: float

    @property
    def scale_in_joules(self) -> float:
        return self.idle_scale_in_joules + self.dynamic_joules

    @property
    def always_on_joules(self) -> float:
        return self.idle_always_on_joules + self.dynamic_joules

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, in watt-hours (the replay's energies are small)."""
        return {
            "windowEndSeconds": self.window_end_seconds,
            "scaleInWattHours": self.scale_in_joules / JOULES_PER_WATT_HOUR,
            "alwaysOnWattHours": self.always_on_joules / JOULES_PER_WATT_HOUR,
            "dynamicWattHours": self.dynamic_joules / JOULES_PER_WATT_HOUR,
            "idleScaleInWattHours": self.idle_scale_in_joules / JOULES_PER_WATT_HOUR,
            "nodeHoursPoweredScaleIn": self.node_seconds_scale_in / 3600,
        }


def power_intervals(
    placements: Sequence[Placement], scale_in_grace_seconds: float, window_end_seconds: float
) -> list[tuple[str, float, float]]:
    """``(node, on, off)`` spells each node is powered in the scale-in regime.

    A node wakes when a pod lands on it; it empties when its last pod ends; if
    the next pod comes more than the grace period later, it was off in between
    (as the engine decides: ``now - emptied_at > grace``). Clipped at the window end.
    """
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in placements:
        if p.start_seconds < window_end_seconds:
            runs[p.node].append((p.start_seconds, p.end_seconds))
    intervals = []
    for node, spans in runs.items():
        spans.sort()
        on, busy_until = spans[0]
        for start, end in spans[1:]:
            if start > busy_until and start - busy_until > scale_in_grace_seconds:
                intervals.append((node, on, busy_until + scale_in_grace_seconds))
                on = start
            busy_until = max(busy_until, end)
        intervals.append((node, on, min(busy_until + scale_in_grace_seconds, window_end_seconds)))
    return intervals


def account_energy(
    placements: Sequence[Placement],
    node_idle_watts: Mapping[str, float],
    window_end_seconds: float,
    scale_in_grace_seconds: float,
) -> EnergyAccount:
    """Energy of ``placements`` on a fleet whose nodes idle at ``node_idle_watts``."""
    dynamic = sum(
        p.dynamic_watts
        * (min(p.end_seconds, window_end_seconds) - min(p.start_seconds, window_end_seconds))
        for p in placements
    )
    intervals = power_intervals(placements, scale_in_grace_seconds, window_end_seconds)
    return EnergyAccount(
        window_end_seconds=window_end_seconds,
        dynamic_joules=dynamic,
        idle_always_on_joules=sum(node_idle_watts.values()) * window_end_seconds,
        idle_scale_in_joules=sum(node_idle_watts[n] * (off - on) for n, on, off in intervals),
        node_seconds_scale_in=sum(off - on for _, on, off in intervals),
    )


def account_powered(
    placements: Sequence[Placement],
    intervals: Sequence[tuple[str, float, float]],
    node_idle_watts: Mapping[str, float],
    window_end_seconds: float,
) -> EnergyAccount:
    """Energy of ``placements`` when an autoscaler had node ``n`` powered over ``intervals``.

    The engine's ``scale_in`` pricing: each node draws its idle power from its
    request to its removal (``intervals``, as :attr:`SimResult.power_intervals`
    or the real replay's autoscaler records them), each placement its active
    power over its run; both are clipped to ``[0, window_end_seconds]``.
    """

    def clipped(on: float, off: float) -> float:
        return max(0.0, min(off, window_end_seconds) - max(on, 0.0))

    dynamic = sum(p.dynamic_watts * clipped(p.start_seconds, p.end_seconds) for p in placements)
    return EnergyAccount(
        window_end_seconds=window_end_seconds,
        dynamic_joules=dynamic,
        idle_always_on_joules=sum(node_idle_watts.values()) * window_end_seconds,
        idle_scale_in_joules=sum(node_idle_watts[n] * clipped(a, b) for n, a, b in intervals),
        node_seconds_scale_in=sum(clipped(a, b) for _, a, b in intervals),
    )
