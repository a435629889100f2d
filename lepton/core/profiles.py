"""GPU profiles: what a GPU model draws and how fast it works under a power limit.

The Lepton scheduler, the operator's admission estimates, the exporter's
``model`` backend and the simulator all need the same few facts about a GPU
model. They live in data files (``gpu_profiles/*.yaml``), one per model, with
the source written beside every number. The A40, V100 and P100 files are
*generated* from the measured Zeus sweeps in ``lepton/data/gpu-power/`` by
:mod:`lepton.data.sweeps` (``python -m lepton.data.sweeps derive``, ``--check`` to
fail on drift, as a test does). The other models come from datasheets and say so.

How power and speed respond to a power limit is a curve over the limit as a
fraction of the board's default limit. The A40's curve is measured; the other
models borrow its shape (the file says so) until someone measures them.
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

PROFILES_DIR = Path(str(resources.files("lepton.core").joinpath("gpu_profiles")))
REFERENCE_MODEL = "A40"
DEFAULT_SLOWDOWN_ALLOWANCE = 0.05
UNKNOWN_MODEL = "Unknown"


# The numbers every profile file gives, each with its source beside it.
NUMBER_FIELDS = (
    "idle_watts",
    "max_power_limit_watts",
    "min_power_limit_watts",
    "relative_speed",
    "busy_power_watts",
    "energy_optimal_power_limit_watts",
)


@dataclass(frozen=True)
class CurvePoint:
    """One measured (or borrowed) point of a GPU's response to a power limit."""

    power_limit_fraction: float  # power limit / default (max) power limit
    speed_fraction: float  # throughput / throughput at the default limit
    busy_power_fraction: float  # busy draw / busy draw at the default limit


@dataclass(frozen=True)
class GpuProfile:
    """What one GPU model draws and how fast it works, with a source for each number."""

    model: str
    product_names: tuple[str, ...]
    idle_watts: float
    max_power_limit_watts: float
    min_power_limit_watts: float
    relative_speed: float
    energy_optimal_power_limit_watts: float
    source: str
    # Draw of a fully busy GPU at its default limit (training workloads; includes idle).
    busy_power_watts: float = 0.0
    curve: tuple[CurvePoint, ...] = ()
    # field name -> where its number comes from
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def clamp_power_limit(self, power_limit_watts: float | None) -> float:
        """The limit NVML would enforce: ``None`` is the default, others are clamped."""
        if power_limit_watts is None:
            return self.max_power_limit_watts
        return min(self.max_power_limit_watts, max(self.min_power_limit_watts, power_limit_watts))

    def _curve_at(self, power_limit_watts: float | None) -> tuple[float, float]:
        limit = self.clamp_power_limit(power_limit_watts)
        if not self.curve:
            return 1.0, 1.0
        return _interpolate(self.curve, limit / self.max_power_limit_watts)

    def busy_power_at(self, power_limit_watts: float | None = None) -> float:
        """Draw of a fully busy GPU under a limit (watts, idle included)."""
        _, power_fraction = self._curve_at(power_limit_watts)
        busy = self.busy_power_watts or self.max_power_limit_watts
        return max(
            self.idle_watts, min(busy * power_fraction, self.clamp_power_limit(power_limit_watts))
        )

    def active_power_watts(
        self, utilization: float, power_limit_watts: float | None = None
    ) -> float:
        """Draw at ``utilization`` 0..1 under a limit (None = default limit); includes idle."""
        u = min(1.0, max(0.0, utilization))
        return self.idle_watts + u * (self.busy_power_at(power_limit_watts) - self.idle_watts)

    def speed_at(self, power_limit_watts: float | None = None) -> float:
        """Throughput relative to the A40 at its default limit (= 1.0) under a limit."""
        speed_fraction, _ = self._curve_at(power_limit_watts)
        return self.relative_speed * speed_fraction


def _interpolate(curve: Sequence[CurvePoint], x: float) -> tuple[float, float]:
    """Linear interpolation of (speed, power) fractions; clamped at the curve's ends.

    Below the lowest measured point the fractions are extrapolated linearly
    from the two lowest points (never below 5 %), so that a board whose
    minimum limit is a smaller fraction than the A40's is not made to look
    faster than the data allow.
    """
    xs = [p.power_limit_fraction for p in curve]
    if len(curve) == 1:
        return curve[0].speed_fraction, curve[0].busy_power_fraction
    if x >= xs[-1]:
        return curve[-1].speed_fraction, curve[-1].busy_power_fraction
    if x <= xs[0]:
        lo, hi = curve[0], curve[1]
    else:
        i = bisect.bisect_right(xs, x)
        lo, hi = curve[i - 1], curve[i]
    t = (x - lo.power_limit_fraction) / (hi.power_limit_fraction - lo.power_limit_fraction)
    speed = lo.speed_fraction + t * (hi.speed_fraction - lo.speed_fraction)
    power = lo.busy_power_fraction + t * (hi.busy_power_fraction - lo.busy_power_fraction)
    return max(0.05, speed), max(0.05, power)


def energy_optimal_power_limit(
    profile: GpuProfile,
    slowdown_allowance: float = DEFAULT_SLOWDOWN_ALLOWANCE,
    candidates: Sequence[float] | None = None,
) -> float:
    """The limit that needs least energy per unit of work while losing at most the allowance.

    Candidates are the curve's points (the measured limits) within the board's
    limits, plus the default limit; energy per work is busy power / speed.
    """
    if candidates is None:
        candidates = [p.power_limit_fraction * profile.max_power_limit_watts for p in profile.curve]
    limits = sorted(
        {
            round(profile.clamp_power_limit(c), 1)
            for c in [*candidates, profile.max_power_limit_watts]
        }
    )
    full_speed = profile.speed_at(None)
    best = profile.max_power_limit_watts
    best_energy = profile.busy_power_at(None) / full_speed
    for limit in limits:
        speed = profile.speed_at(limit)
        if speed < (1.0 - slowdown_allowance) * full_speed - 1e-9:
            continue
        energy = profile.busy_power_at(limit) / speed
        if energy < best_energy - 1e-9:
            best, best_energy = limit, energy
    return best


# --------------------------------------------------------------------------- loading


def _number(doc: Mapping[str, Any], key: str, path: Path) -> tuple[float, str]:
    entry = doc.get(key)
    if not isinstance(entry, Mapping) or "value" not in entry or "source" not in entry:
        raise ValueError(f"{path}: '{key}' must be a mapping with 'value' and 'source'")
    return float(entry["value"]), str(entry["source"])


def _curve_from_doc(doc: Mapping[str, Any]) -> tuple[CurvePoint, ...]:
    return tuple(
        CurvePoint(
            power_limit_fraction=float(p["power_limit_fraction"]),
            speed_fraction=float(p["speed_fraction"]),
            busy_power_fraction=float(p["busy_power_fraction"]),
        )
        for p in doc["points"]
    )


def profile_from_doc(
    doc: Mapping[str, Any], path: Path, reference_curve: tuple[CurvePoint, ...]
) -> GpuProfile:
    sources: dict[str, str] = {}
    values: dict[str, float] = {}
    for key in NUMBER_FIELDS:
        values[key], sources[key] = _number(doc, key, path)
    curve_doc = doc.get("power_limit_curve") or {}
    curve = _curve_from_doc(curve_doc) if curve_doc.get("points") else reference_curve
    sources["power_limit_curve"] = str(curve_doc.get("source", "assumed: the A40's curve"))
    return GpuProfile(
        model=str(doc["model"]),
        product_names=tuple(str(n) for n in doc.get("product_names", ())),
        idle_watts=values["idle_watts"],
        max_power_limit_watts=values["max_power_limit_watts"],
        min_power_limit_watts=values["min_power_limit_watts"],
        relative_speed=values["relative_speed"],
        energy_optimal_power_limit_watts=values["energy_optimal_power_limit_watts"],
        busy_power_watts=values["busy_power_watts"],
        source=str(doc["source"]),
        curve=curve,
        sources=sources,
    )


@functools.cache
def load_profiles(directory: Path = PROFILES_DIR) -> dict[str, GpuProfile]:
    """Every profile in ``directory``, by short model name."""
    docs = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        docs[str(doc["model"])] = (doc, path)
    reference_doc, _ = docs[REFERENCE_MODEL]
    reference_curve = _curve_from_doc(reference_doc["power_limit_curve"])
    return {
        model: profile_from_doc(doc, path, reference_curve) for model, (doc, path) in docs.items()
    }


def default_profile(name: str = UNKNOWN_MODEL) -> GpuProfile:
    """A deliberately unattractive profile for a GPU we know nothing about.

    Slow (half the A40), busy at its whole 300 W board limit, never power-capped
    (``Auto`` leaves an unknown board at its default limit): placement prefers
    known GPUs and an estimate errs towards more energy, never less.
    """
    reason = "default: conservative assumption for an unknown GPU model"
    return GpuProfile(
        model=UNKNOWN_MODEL,
        product_names=(name,),
        idle_watts=50.0,
        max_power_limit_watts=300.0,
        min_power_limit_watts=300.0,
        relative_speed=0.5,
        energy_optimal_power_limit_watts=300.0,
        busy_power_watts=300.0,
        source=reason,
        curve=(),
        sources=dict.fromkeys(NUMBER_FIELDS, reason),
    )


def _normalise(name: str) -> str:
    return name.strip().upper().replace(" ", "-").replace("_", "-")


@functools.cache
def _index() -> dict[str, GpuProfile]:
    index: dict[str, GpuProfile] = {}
    for profile in load_profiles().values():
        index[_normalise(profile.model)] = profile
        for product in profile.product_names:
            index[_normalise(product)] = profile
    return index


# A MIG-capable board (A100, H100) splits into 7 compute slices: "…-MIG-3g.40gb" holds 3.
MIG_COMPUTE_SLICES = 7
_MIG = re.compile(r"-MIG-(\d+)G(?:[.-]|$)")


def mig_slice_profile(board: GpuProfile, slices: int) -> GpuProfile:
    """A MIG slice as its fraction of the board: speed, idle and busy draw scaled by slices/7.

    A model, not a measurement: NVML meters only the whole board. The power-limit
    range scales too, so that the board's curve applies to the slice unchanged.
    """
    fraction = min(max(slices, 1), MIG_COMPUTE_SLICES) / MIG_COMPUTE_SLICES
    note = f"derived: {slices}/{MIG_COMPUTE_SLICES} of the {board.model} board (MIG slice)"
    return replace(
        board,
        model=f"{board.model}-MIG-{slices}g",
        product_names=(),
        idle_watts=board.idle_watts * fraction,
        max_power_limit_watts=board.max_power_limit_watts * fraction,
        min_power_limit_watts=board.min_power_limit_watts * fraction,
        relative_speed=board.relative_speed * fraction,
        energy_optimal_power_limit_watts=board.energy_optimal_power_limit_watts * fraction,
        busy_power_watts=board.busy_power_watts * fraction,
        source=f"{note}; {board.source}",
        sources=dict.fromkeys(board.sources, note),
    )


@functools.cache
def _lookup(model_or_product: str) -> GpuProfile | None:
    key = _normalise(model_or_product)
    if (mig := _MIG.search(key)) is not None:
        board = _lookup(key[: mig.start()])
        return None if board is None else mig_slice_profile(board, int(mig.group(1)))
    index = _index()
    if key in index:
        return index[key]
    # "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", "Tesla-V100-SXM2-32GB", "NVIDIA A10": the
    # first token after the vendor prefix names the model.
    for prefix in ("NVIDIA-", "TESLA-", "GEFORCE-"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    for prefix in ("NVIDIA-", "TESLA-"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    token = key.split("-", 1)[0]
    return index.get(token)


@functools.cache
def _warn_unknown(model_or_product: str) -> None:
    logger.warning(
        "GPU model %r has no profile; using conservative defaults (add a file under %s; "
        "known models: %s)",
        model_or_product,
        PROFILES_DIR,
        ", ".join(known_models()),
    )


def get_profile(model_or_product: str) -> GpuProfile:
    """The profile of ``"A40"``, ``"NVIDIA-A40"`` …; unknown names get a conservative default."""
    profile = _lookup(model_or_product or "")
    if profile is None:
        _warn_unknown(model_or_product)
        return default_profile(model_or_product)
    return profile


def is_known(model_or_product: str) -> bool:
    """Whether a profile exists for this model or product name."""
    return _lookup(model_or_product or "") is not None


def known_models() -> tuple[str, ...]:
    """The short model names the API accepts, reference model first."""
    models = sorted(load_profiles())
    models.remove(REFERENCE_MODEL)
    return (REFERENCE_MODEL, *models)
