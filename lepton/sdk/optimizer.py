"""Choosing a GPU power limit that trains with less energy, while training.

A GPU at its default (highest) power limit rarely spends its last watts well:
Zeus (NSDI'23) measured on the A40 that a limit around 175-225 W keeps nearly
all the throughput and saves 10-20 % of the energy (``lepton/data/gpu-power/``).
The best limit depends on the model, so it is measured, not guessed: like
Zeus's ``GlobalPowerLimitOptimizer``, the first steps of the job itself run a
few steps at each candidate limit, time and energy per step are measured, and
the job trains on at the limit that spends the least energy per step among
those at most ``max_slowdown`` slower than the default limit.

``PowerLimitOptimizer`` is a step-driven state machine (call ``on_step_begin``
and ``on_step_end`` around each training step), so one implementation serves
the engine's plain loop, the Keras callback and a PyTorch loop alike. The choice
itself, ``choose_power_limit``, is a pure function of the measurements.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Protocol

from lepton.hw.nvml import PowerLimitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizerConfig:
    """How to profile the candidate limits."""

    max_slowdown: float = 0.05
    # Steps at the default limit before profiling: compilation, cuDNN autotuning and
    # data-loader start-up make the first steps unlike the rest (Zeus uses 10).
    warmup_steps: int = 10
    # Steps after each limit change that are not measured, while clocks settle.
    settle_steps: int = 2
    # Measured steps per limit (Zeus's default profile window is 40 steps).
    profile_steps: int = 40
    # NVML's energy counter moves every 20-100 ms (energy-metering notes): a window
    # of at least 2 s keeps that granularity within about 5 % of the reading.
    min_window_seconds: float = 2.0
    # Candidate spacing, Zeus's default; ignored when ``power_limits_watts`` is given.
    limit_step_watts: float = 25.0
    power_limits_watts: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_slowdown < 0:
            raise ValueError(f"max_slowdown must be >= 0 (0.05 means 5 %), got {self.max_slowdown}")
        if self.profile_steps < 1:
            raise ValueError(f"profile_steps must be at least 1, got {self.profile_steps}")
        if self.warmup_steps < 0 or self.settle_steps < 0:
            raise ValueError("warmup_steps and settle_steps must be >= 0")
        if self.limit_step_watts <= 0:
            raise ValueError(f"limit_step_watts must be positive, got {self.limit_step_watts}")

    def steps_to_profile(self, candidates: int) -> int:
        """Steps needed before the choice is made (at least; windows may stretch)."""
        return self.warmup_steps + candidates * (self.settle_steps + self.profile_steps)


@dataclass(frozen=True)
class LimitMeasurement:
    """Time and energy of the steps measured at one power limit (summed over GPUs)."""

    power_limit_watts: float
    steps: int
    seconds: float
    energy_joules: float

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps

    @property
    def joules_per_step(self) -> float:
        return self.energy_joules / self.steps

    @property
    def average_watts(self) -> float:
        return self.energy_joules / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class LimitChoice:
    """The chosen limit and how it compares with the baseline (default) limit."""

    baseline: LimitMeasurement
    chosen: LimitMeasurement

    @property
    def slowdown_fraction(self) -> float:
        return self.chosen.seconds_per_step / self.baseline.seconds_per_step - 1

    @property
    def energy_saved_fraction(self) -> float:
        return 1 - self.chosen.joules_per_step / self.baseline.joules_per_step


def candidate_power_limits(
    min_watts: float, max_watts: float, default_watts: float, step_watts: float = 25.0
) -> list[float]:
    """Limits to profile, highest first: every ``step_watts`` below the maximum, and the default.

    Highest first, so that the default limit (usually the maximum) is measured
    before the GPU is ever slowed.
    """
    if min_watts > max_watts:
        raise ValueError(f"the lowest limit {min_watts} W is above the highest {max_watts} W")
    limits = {max_watts, min(max(default_watts, min_watts), max_watts)}
    limit = max_watts - step_watts
    while limit >= min_watts - 1e-9:
        limits.add(limit)
        limit -= step_watts
    return sorted(limits, reverse=True)


def choose_power_limit(
    measurements: Sequence[LimitMeasurement], baseline_watts: float, max_slowdown: float
) -> LimitChoice:
    """The least energy per step among limits at most ``max_slowdown`` slower than the baseline.

    The baseline's own measurement always qualifies, so a choice always exists.
    Equal energies go to the higher limit, the faster one.
    """
    baselines = [m for m in measurements if abs(m.power_limit_watts - baseline_watts) < 0.5]
    if not baselines:
        raise ValueError(f"no measurement at the baseline limit {baseline_watts} W")
    baseline = baselines[0]
    slowest_allowed = baseline.seconds_per_step * (1 + max_slowdown)
    allowed = [m for m in measurements if m.seconds_per_step <= slowest_allowed * (1 + 1e-12)]
    chosen = min(allowed, key=lambda m: (m.joules_per_step, -m.power_limit_watts))
    return LimitChoice(baseline=baseline, chosen=chosen)


class PowerLimitedGpu(Protocol):
    """What the optimizer needs of a GPU (``lepton.hw.nvml.NvmlGpu`` provides it)."""

    @property
    def uuid(self) -> str: ...

    def power_limit_watts(self) -> float: ...

    def default_power_limit_watts(self) -> float: ...

    def power_limit_range_watts(self) -> tuple[float, float]: ...

    def set_power_limit_watts(self, watts: float) -> float: ...


class OptimizerState(StrEnum):
    """Where the optimizer is in its run."""

    WARMUP = "Warmup"
    PROFILING = "Profiling"
    TUNED = "Tuned"
    FAILED = "Failed"


@dataclass(frozen=True)
class OptimizeReport:
    """What ``LeptonEngine.optimize`` did, for people (``summary``) and for JSON (``to_dict``)."""

    tuned: bool
    reason: str
    steps: int
    seconds: float
    max_slowdown: float
    default_power_limit_watts: float | None = None
    chosen_power_limit_watts: float | None = None
    measurements: tuple[LimitMeasurement, ...] = ()
    slowdown_fraction: float | None = None
    energy_saved_fraction: float | None = None
    # Steps trained at the chosen limit after profiling, and the energy they saved
    # against the default limit, projected from the profiled joules per step.
    steps_at_chosen_limit: int = 0
    projected_energy_saved_joules: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["measurements"] = [
            {
                **asdict(m),
                "seconds_per_step": m.seconds_per_step,
                "joules_per_step": m.joules_per_step,
                "average_watts": m.average_watts,
            }
            for m in self.measurements
        ]
        return data

    def summary(self) -> str:
        """A few lines for the end of a training log."""
        if not self.tuned:
            return f"Power limit: not tuned; {self.reason}. Trained {self.steps} steps unchanged."
        lines = [
            f"Power limit: {self.chosen_power_limit_watts:.0f} W "
            f"(default {self.default_power_limit_watts:.0f} W), "
            f"{self.energy_saved_fraction:.1%} less energy per step, "
            f"{self.slowdown_fraction:+.1%} time per step "
            f"(allowed slowdown {self.max_slowdown:.0%}); measured over "
            f"{len(self.measurements)} limits.",
            f"  {'limit (W)':>9}  {'s/step':>9}  {'J/step':>9}  {'avg W':>7}",
        ]
        for m in self.measurements:
            mark = "  <- chosen" if m.power_limit_watts == self.chosen_power_limit_watts else ""
            lines.append(
                f"  {m.power_limit_watts:>9.0f}  {m.seconds_per_step:>9.4f}  "
                f"{m.joules_per_step:>9.2f}  {m.average_watts:>7.1f}{mark}"
            )
        if self.projected_energy_saved_joules is not None:
            lines.append(
                f"  {self.steps_at_chosen_limit} steps at the chosen limit saved about "
                f"{self.projected_energy_saved_joules / 3600:.3f} Wh against the default "
                "(projected from the profiled energy per step)."
            )
        return "\n".join(lines)


class PowerLimitOptimizer:
    """Profiles candidate power limits over the first training steps, then keeps the best.

    Call ``on_step_begin()`` before and ``on_step_end()`` after every training
    step, and ``conclude()`` when training ends; ``restore()`` puts back the
    limits the GPUs had before (the engine does it in a ``finally``).
    """

    def __init__(
        self,
        gpus: Sequence[PowerLimitedGpu],
        energy_joules_total: Callable[[], float],
        settings: OptimizerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        synchronize: Callable[[], object] | None = None,
    ) -> None:
        if not gpus:
            raise ValueError("the optimizer needs at least one GPU")
        self.gpus = list(gpus)
        self.settings = settings or OptimizerConfig()
        self._energy = energy_joules_total
        self._clock = clock
        self._synchronize = synchronize
        self.original_limits_watts = {gpu.uuid: gpu.power_limit_watts() for gpu in self.gpus}
        self.default_power_limit_watts = self.gpus[0].default_power_limit_watts()
        ranges = [gpu.power_limit_range_watts() for gpu in self.gpus]
        low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
        if self.settings.power_limits_watts:
            self.candidates = sorted(
                {min(max(w, low), high) for w in self.settings.power_limits_watts}
                | {self.default_power_limit_watts},
                reverse=True,
            )
        else:
            self.candidates = candidate_power_limits(
                low, high, self.default_power_limit_watts, self.settings.limit_step_watts
            )
        self.state = OptimizerState.WARMUP
        self.reason = ""
        self.measurements: list[LimitMeasurement] = []
        self.choice: LimitChoice | None = None
        self.steps = 0
        self.steps_at_chosen_limit = 0
        self._started = False
        self._candidate = -1
        self._settled = 0
        self._window: tuple[float, float] | None = None
        self._window_steps = 0
        self._start_seconds = clock()

    @property
    def profiling_done(self) -> bool:
        return self.state in (OptimizerState.TUNED, OptimizerState.FAILED)

    def on_step_begin(self) -> None:
        if not self._started:
            self._started = True
            self._start_seconds = self._clock()
            if self.settings.warmup_steps == 0:
                self._enter_candidate(0)

    def on_step_end(self) -> None:
        if not self._started:
            self.on_step_begin()
        self.steps += 1
        if self.state is OptimizerState.TUNED:
            self.steps_at_chosen_limit += 1
        elif self.state is OptimizerState.WARMUP:
            if self.steps >= self.settings.warmup_steps:
                self._enter_candidate(0)
        elif self.state is OptimizerState.PROFILING:
            if self._window is None:
                self._settled += 1
                if self._settled >= self.settings.settle_steps:
                    self._open_window()
            else:
                self._window_steps += 1
                self._energy()  # sampled meters integrate better with frequent reads
                opened_at = self._window[0]
                if (
                    self._window_steps >= self.settings.profile_steps
                    and self._clock() - opened_at >= self.settings.min_window_seconds
                ):
                    self._close_window()
                    if self._candidate + 1 < len(self.candidates):
                        self._enter_candidate(self._candidate + 1)
                    else:
                        self._decide()

    def _sync(self) -> None:
        if self._synchronize is not None:
            self._synchronize()

    def _set_all(self, watts: float) -> None:
        for gpu in self.gpus:
            gpu.set_power_limit_watts(watts)

    def _enter_candidate(self, index: int) -> None:
        self._candidate = index
        try:
            self._set_all(self.candidates[index])
        except PowerLimitError as error:
            self._fail(str(error))
            return
        self.state = OptimizerState.PROFILING
        self._settled = 0
        self._window = None
        log.debug("profiling power limit %.0f W", self.candidates[index])
        if self.settings.settle_steps == 0:
            self._open_window()

    def _open_window(self) -> None:
        self._sync()
        self._window = (self._clock(), self._energy())
        self._window_steps = 0

    def _close_window(self) -> None:
        assert self._window is not None
        self._sync()
        opened_at, energy_at_open = self._window
        self.measurements.append(
            LimitMeasurement(
                power_limit_watts=self.candidates[self._candidate],
                steps=self._window_steps,
                seconds=self._clock() - opened_at,
                energy_joules=self._energy() - energy_at_open,
            )
        )
        self._window = None

    def _decide(self) -> None:
        self.choice = choose_power_limit(
            self.measurements, self.default_power_limit_watts, self.settings.max_slowdown
        )
        try:
            self._set_all(self.choice.chosen.power_limit_watts)
        except PowerLimitError as error:
            self._fail(str(error))
            return
        self.state = OptimizerState.TUNED

    def _fail(self, reason: str) -> None:
        self.state = OptimizerState.FAILED
        self.reason = reason
        self.choice = None
        self.restore()

    def restore(self) -> None:
        """Put back every GPU's limit from before the optimizer; never raises."""
        for gpu in self.gpus:
            try:
                gpu.set_power_limit_watts(self.original_limits_watts[gpu.uuid])
            except Exception as error:  # restoring is best-effort: report, do not mask
                log.warning("could not restore the power limit of GPU %s: %s", gpu.uuid, error)

    def conclude(self) -> OptimizeReport:
        """The report once training ended; decides from partial profiles if it ended early."""
        if self.state is OptimizerState.PROFILING or self.state is OptimizerState.WARMUP:
            measured_baseline = any(
                abs(m.power_limit_watts - self.default_power_limit_watts) < 0.5
                for m in self.measurements
            )
            if measured_baseline and len(self.measurements) > 1:
                self.choice = choose_power_limit(
                    self.measurements, self.default_power_limit_watts, self.settings.max_slowdown
                )
                self.state = OptimizerState.TUNED
                self.reason = "training ended before every candidate limit was profiled"
            else:
                needed = self.settings.steps_to_profile(len(self.candidates))
                self.state = OptimizerState.FAILED
                self.reason = (
                    f"training ended after {self.steps} steps, before profiling finished "
                    f"(about {needed} steps are needed for {len(self.candidates)} limits; "
                    "lower profile_steps or pass fewer power_limits_watts)"
                )
        common: dict[str, Any] = {
            "steps": self.steps,
            "seconds": self._clock() - self._start_seconds,
            "max_slowdown": self.settings.max_slowdown,
            "default_power_limit_watts": self.default_power_limit_watts,
            "measurements": tuple(self.measurements),
        }
        if self.choice is None:
            return OptimizeReport(tuned=False, reason=self.reason, **common)
        saved_per_step = self.choice.baseline.joules_per_step - self.choice.chosen.joules_per_step
        return OptimizeReport(
            tuned=True,
            reason=self.reason or "profiled every candidate limit",
            chosen_power_limit_watts=self.choice.chosen.power_limit_watts,
            slowdown_fraction=self.choice.slowdown_fraction,
            energy_saved_fraction=self.choice.energy_saved_fraction,
            steps_at_chosen_limit=self.steps_at_chosen_limit,
            projected_energy_saved_joules=saved_per_step * self.steps_at_chosen_limit,
            **common,
        )
