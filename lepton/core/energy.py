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

# A GPU server's draw with its GPUs idle and no job: fans, CPUs, memory, NICs.
# assumed: ~100 W for a 2-socket GPU server at idle, excluding GPUs (order of
# magnitude of SPECpower idle results for 2-socket servers); used only for the
# marginal energy of waking an empty node.
HOST_IDLE_WATTS = 100.0

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

    Includes the GPUs' own idle draw, as a per-GPU meter attributing power to
    the job would; excludes the host. The operator reserves this at admission.
    """
    profile = get_profile(gpu_model)
    seconds = _duration_seconds(profile, work_reference_gpu_hours, gpus, power_limit_watts)
    return (
        max(1, gpus)
        * profile.active_power_watts(1.0, power_limit_watts)
        * seconds
        / SECONDS_PER_HOUR
    )


def node_idle_watts(profile: GpuProfile, total_gpus: int) -> float:
    """What a powered node with ``total_gpus`` idle GPUs of this model draws doing nothing."""
    return HOST_IDLE_WATTS + max(0, total_gpus) * profile.idle_watts
