"""The arithmetic of turning meter readings into joules, and joules into pods' shares.

Meters lie in small, well-known ways: RAPL's microjoule counter wraps at
``max_energy_range_uj``, NVML's millijoule counter restarts at zero when the
driver reloads, and a GPU without an energy counter only reports power. Pods
sharing one GPU must split its energy without counting any joule twice. These
rules decide what users are billed for, so they live here, pure and tested,
and the exporter only feeds them readings.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

# A watt for an hour.
JOULES_PER_WATT_HOUR = 3600.0


def wrapping_counter_delta(previous: float, current: float, max_range: float) -> float:
    """The increase of a counter that wraps to zero after ``max_range`` (RAPL's ``energy_uj``).

    A current value below the previous one means the counter wrapped once:
    the energy is what remained up to ``max_range`` plus what came after zero
    (the Linux powercap documentation, ``max_energy_range_uj``).
    """
    if current >= previous:
        return current - previous
    if max_range <= 0:
        # Without a known range a decrease can only be read as a reset.
        return current
    return (max_range - previous) + current


def resetting_counter_delta(previous: float, current: float) -> float:
    """The increase of a counter that restarts at zero (NVML's, after a driver reload).

    After a reset the counter holds the energy since the reset, which is the
    part of the interval we can still vouch for; Prometheus' ``increase()``
    applies the same rule to counters.
    """
    if current >= previous:
        return current - previous
    return current


def integrate_power_joules(previous_watts: float, current_watts: float, seconds: float) -> float:
    """Energy over ``seconds`` from two power readings (trapezoid rule), where no counter exists."""
    if seconds <= 0:
        return 0.0
    return (max(previous_watts, 0.0) + max(current_watts, 0.0)) / 2.0 * seconds


def split_idle_and_active(
    device_joules: float, idle_watts: float, seconds: float
) -> tuple[float, float]:
    """Split a device's energy over an interval into (idle, active) joules.

    Idle is the profile's idle power over the interval, never more than the
    device spent (a GPU in a deeper sleep state than its profile's idle), so
    that idle + active always equals the device's joules.
    """
    device_joules = max(device_joules, 0.0)
    idle = min(device_joules, max(idle_watts, 0.0) * max(seconds, 0.0))
    return idle, device_joules - idle


def split_by_share(active_joules: float, shares: Mapping[K, float]) -> dict[K, float]:
    """Split active energy among holders in proportion to their shares (SM utilisation).

    Shares need not sum to one. When every share is zero (the processes were
    idle during the interval, or no per-process utilisation was reported) the
    energy is split equally, so that the holders' joules still add up to the
    device's active joules; never copied to each holder, as dcgm-exporter does.
    An empty mapping returns an empty dict: the caller accounts that energy as
    unattributed.
    """
    if not shares:
        return {}
    positive = {key: max(share, 0.0) for key, share in shares.items()}
    total = sum(positive.values())
    if total <= 0:
        equal = active_joules / len(positive)
        return dict.fromkeys(positive, equal)
    return {key: active_joules * (share / total) for key, share in positive.items()}
