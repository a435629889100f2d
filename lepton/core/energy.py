"""The energy model: how long a job's GPU work takes and what it costs, per GPU model.

Work is measured in *reference GPU-hours*: hours on one A40 at its default
power limit. A GPU of another model needs ``work / speed`` hours, where speed
comes from its profile (:mod:`lepton.core.profiles`) under the chosen power
limit. Energy is power x time. Every number here is a **model estimate**, used
for admission and placement; metered energy comes from the exporter.

Work is assumed to scale linearly across a job's GPUs (no communication loss),
which favours neither model nor node and keeps the arithmetic readable.
"""

from __future__ import annotations

from .profiles import GpuProfile, get_profile

SECONDS_PER_HOUR = 3600.0

# A GPU server's draw with its GPUs idle and no job, GPUs excluded: CPUs, memory,
# fans, NICs, PCIe switches. estimate (not measured here): ~100 W for the 2-socket
# host at idle (the order of SPECpower idle results for 2-socket servers) plus ~25 W
# per GPU slot for what a GPU server adds per GPU (PCIe switch, NIC share, fans),
# so 300 W for an 8-GPU server. A per-node fact: the node label
# lepton.dev/host-idle-watts (or the fleet file) overrides it with a measured value.
HOST_IDLE_BASE_WATTS = 100.0
HOST_IDLE_WATTS_PER_GPU_SLOT = 25.0

POWER_CAP_AUTO = "Auto"
POWER_CAP_NONE = "None"


def chosen_power_limit_watts(profile: GpuProfile, power_cap: str) -> float:
    """The GPU power limit a job runs under.

    ``Auto`` is the profile's energy-optimal limit, ``None`` the default
    (maximum) limit, a number of watts is clamped to the board's limits.
    """
    cap = (power_cap or POWER_CAP_AUTO).strip()
    if cap.lower() == POWER_CAP_AUTO.lower():
        return profile.clamp_power_limit(profile.energy_optimal_power_limit_watts)
    if cap.lower() == POWER_CAP_NONE.lower():
        return profile.max_power_limit_watts
    try:
        watts = float(cap.removesuffix("W").removesuffix("w").strip())
    except ValueError:
        raise ValueError(
            f"powerCap {power_cap!r} is not Auto, None or a number of watts — "
            f"set spec.powerCap to e.g. 'Auto' or '{profile.energy_optimal_power_limit_watts:g}'"
        ) from None
    if not watts > 0:  # also rejects NaN
        raise ValueError(f"powerCap {power_cap!r} must be a positive number of watts")
    return profile.clamp_power_limit(watts)


def _duration_seconds(
    profile: GpuProfile, work_reference_gpu_hours: float, gpus: int, power_limit_watts: float | None
) -> float:
    speed = profile.speed_at(power_limit_watts)
    return max(0.0, work_reference_gpu_hours) * SECONDS_PER_HOUR / (max(1, gpus) * speed)


def job_duration_seconds(
    gpu_model: str,
    work_reference_gpu_hours: float,
    gpus: int,
    power_limit_watts: float | None = None,
) -> float:
    """Wall time of ``work`` reference GPU-hours on ``gpus`` GPUs of ``gpu_model``."""
    return _duration_seconds(
        get_profile(gpu_model), work_reference_gpu_hours, gpus, power_limit_watts
    )


def job_energy_watt_hours(
    gpu_model: str,
    work_reference_gpu_hours: float,
    gpus: int,
    power_limit_watts: float | None = None,
) -> float:
    """Estimated energy of the job's GPUs, busy for the whole run (a model estimate).

    Includes the GPUs' own idle draw and excludes the host: the basis a budget
    pays on (docs/decisions/0006-energy-books.md), the same the metered charge
    (the pod's active plus idle counters) and the run-time fallback use. The
    operator reserves this at admission.
    """
    profile = get_profile(gpu_model)
    seconds = _duration_seconds(profile, work_reference_gpu_hours, gpus, power_limit_watts)
    return (
        max(1, gpus)
        * profile.active_power_watts(1.0, power_limit_watts)
        * seconds
        / SECONDS_PER_HOUR
    )


def host_idle_watts(total_gpus: int) -> float:
    """The default idle draw of a GPU server's host (GPUs excluded), by its GPU count."""
    return HOST_IDLE_BASE_WATTS + max(0, total_gpus) * HOST_IDLE_WATTS_PER_GPU_SLOT


def node_idle_watts(profile: GpuProfile, total_gpus: int, host_watts: float | None = None) -> float:
    """What a powered node with ``total_gpus`` idle GPUs of this model draws doing nothing."""
    host = host_idle_watts(total_gpus) if host_watts is None else host_watts
    return host + max(0, total_gpus) * profile.idle_watts


# --------------------------------------------------------------------------- services
#
# A service runs as long as it runs: a faster GPU does not shorten it, it only
# leaves the GPU idler. Its demand is given on the reference GPU (the A40): the
# percentage of one A40 it keeps busy at its expected load. On a GPU of speed s
# under the chosen limit it keeps u_m = u_ref / s of that GPU busy.


def service_utilization(
    profile: GpuProfile, reference_utilization_percent: float, power_limit_watts: float | None
) -> float:
    """The fraction of one GPU of this model a service keeps busy (may exceed 1: too small)."""
    return max(0.0, reference_utilization_percent) / 100.0 / profile.speed_at(power_limit_watts)


def service_power_watts(
    profile: GpuProfile,
    reference_utilization_percent: float,
    gpus: int,
    gpu_milli: int = 1000,
    power_limit_watts: float | None = None,
) -> float:
    """What a service draws on ``gpus`` GPUs of this model (a model estimate, host excluded).

    The idle draw of what it holds (a whole GPU held by a service pays its idle
    power; a share of a time-sliced GPU pays its share) plus the active draw of
    its load, ``(P_busy - P_idle) · u_m`` per GPU.
    """
    share = min(max(gpu_milli, 1), 1000) / 1000.0
    u = min(1.0, service_utilization(profile, reference_utilization_percent, power_limit_watts))
    active = profile.busy_power_at(power_limit_watts) - profile.idle_watts
    return max(1, gpus) * (share * profile.idle_watts + active * u)
