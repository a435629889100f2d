"""The measured power sweeps, and the GPU profiles derived from them.

The Zeus sweeps in ``gpu-power/`` (:data:`SWEEPS`) measured training workloads on
the A40, V100 and P100 at every power limit. :func:`derive_sweep` turns one into
what a profile says (the curve, the busy draw, the limits, the energy-optimal
limit); the checked-in profiles in ``lepton/core/gpu_profiles/`` are written by::

    python -m lepton.data.sweeps derive            # rewrite the swept models' files
    python -m lepton.data.sweeps derive --check    # fail if one would change

This is a tool over the shipped files; the profiles themselves, and everything that
reads them, are the pure :mod:`lepton.core.profiles`.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import lepton.data
from lepton.core.profiles import (
    DEFAULT_SLOWDOWN_ALLOWANCE,
    NUMBER_FIELDS,
    PROFILES_DIR,
    energy_optimal_power_limit,
    profile_from_doc,
)

# The measured sweeps (lepton/data/gpu-power/, Zeus NSDI'23): per model, the file and the
# limit the boards were swept from (their default limit).
SWEEPS: Mapping[str, tuple[str, float]] = {
    "A40": ("gpu-power/summary_power_a40.csv", 300.0),
    "V100": ("gpu-power/summary_power_v100.csv", 250.0),
    "P100": ("gpu-power/summary_power_p100.csv", 250.0),
}
A40_SWEEP = SWEEPS["A40"][0]
A40_PROFILE_PATH = PROFILES_DIR / "a40.yaml"

# Facts about the A40 that the sweep cannot give; their sources sit beside them.
_A40_FIXED = {
    "idle_watts": (
        30.0,
        "vendor/field note: about 30 W with no process on the GPU (about 110 W when a "
        "process holds it in P0 without computing); not in the Zeus sweep",
    ),
    "max_power_limit_watts": (300.0, "datasheet: NVIDIA A40, 300 W maximum board power"),
}
# The numbers a sweep gives; a datasheet profile with a sweep takes these from it.
_MEASURED_KEYS = (
    "max_power_limit_watts",
    "min_power_limit_watts",
    "busy_power_watts",
    "energy_optimal_power_limit_watts",
    "power_limit_curve",
)


def read_sweep(
    model: str, data_dir: Path | None = None
) -> dict[tuple[str, ...], dict[float, tuple[float, float]]]:
    """A model's Zeus sweep per training workload (dataset, network, batch size, optimizer):
    power limit (W) -> (seconds per epoch, average power W)."""
    path = (data_dir or lepton.data.data_dir()) / SWEEPS[model][0]
    runs: dict[tuple[str, ...], dict[float, tuple[float, float]]] = defaultdict(dict)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["dataset"], row["network"], row["batch_size"], row["optimizer"])
            runs[key][float(row["power_limit"])] = (
                float(row["time_per_epoch"]),
                float(row["average_power"]),
            )
    return dict(runs)


def derive_sweep(
    model: str,
    data_dir: Path | None = None,
    slowdown_allowance: float = DEFAULT_SLOWDOWN_ALLOWANCE,
) -> dict[str, Any]:
    """What a model's measured Zeus sweep says: its curve, busy draw, limits, optimal limit.

    Per training workload (dataset, network, batch size, optimizer) measured at
    every limit, throughput and draw are normalised to the workload's own run at
    the default limit; the curve is the median over workloads at each limit,
    the busy draw the median absolute draw at the default limit.
    """
    relative, default_limit = SWEEPS[model]
    path = (data_dir or lepton.data.data_dir()) / relative
    runs = read_sweep(model, data_dir)
    limits = sorted({limit for run in runs.values() for limit in run})
    if default_limit not in limits:
        raise ValueError(f"{path}: no run at the {model}'s default limit {default_limit} W")
    complete = [run for run in runs.values() if all(limit in run for limit in limits)]
    points = []
    # A lower limit can make a board neither faster nor hungrier: medians that rise by
    # measurement noise as the limit falls (the P100's 225 W draw is 0.2 % above 250 W's)
    # are held at the next higher limit's value, from the default limit down.
    ceiling_speed, ceiling_power = 1.0, 1.0
    medians = []
    for limit in reversed(limits):
        speed = statistics.median(run[default_limit][0] / run[limit][0] for run in complete)
        power = statistics.median(run[limit][1] / run[default_limit][1] for run in complete)
        ceiling_speed, ceiling_power = min(speed, ceiling_speed), min(power, ceiling_power)
        medians.append((limit, ceiling_speed, ceiling_power))
    for limit, speed, power in reversed(medians):
        points.append(
            {
                "power_limit_fraction": round(limit / default_limit, 6),
                "power_limit_watts": limit,
                "speed_fraction": round(speed, 4),
                "busy_power_fraction": round(power, 4),
            }
        )
    busy = statistics.median(run[default_limit][1] for run in complete)
    sweep = (
        f"measured: Zeus NSDI'23 {model} sweep (lepton/data/{relative}), median over "
        f"{len(complete)} training workloads"
    )
    doc: dict[str, Any] = {
        "max_power_limit_watts": {
            "value": default_limit,
            "source": f"{sweep}: the default limit the boards were swept from",
        },
        "min_power_limit_watts": {
            "value": float(limits[0]),
            "source": f"{sweep}: lowest limit swept",
        },
        "busy_power_watts": {
            "value": round(busy, 1),
            "source": f"{sweep}: median average draw at the {default_limit:g} W limit",
        },
        "power_limit_curve": {"source": sweep, "points": points},
    }
    filler = {"value": 1.0, "source": ""}
    probe = {"model": model, "source": "", "idle_watts": filler, "relative_speed": filler}
    profile = profile_from_doc(probe | doc | {"energy_optimal_power_limit_watts": filler}, path, ())
    doc["energy_optimal_power_limit_watts"] = {
        "value": energy_optimal_power_limit(profile, slowdown_allowance),
        "source": (
            f"{sweep}: the measured limit with least energy per work that keeps "
            f"≥ {1 - slowdown_allowance:.0%} of default throughput"
        ),
    }
    return doc


def derive_a40(
    data_dir: Path | None = None, slowdown_allowance: float = DEFAULT_SLOWDOWN_ALLOWANCE
) -> dict[str, Any]:
    """The A40 profile document, computed from the Zeus power-limit sweeps."""
    doc = derive_sweep("A40", data_dir, slowdown_allowance)
    doc["max_power_limit_watts"]["source"] = _A40_FIXED["max_power_limit_watts"][1]
    doc["min_power_limit_watts"]["source"] += " (NVML reports about 100 W)"
    return {
        "model": "A40",
        "product_names": ["NVIDIA-A40"],
        "source": (
            "measured: generated by `python -m lepton.data.sweeps derive` from "
            f"lepton/data/{A40_SWEEP}; do not edit by hand"
        ),
        "idle_watts": {"value": _A40_FIXED["idle_watts"][0], "source": _A40_FIXED["idle_watts"][1]},
        "relative_speed": {"value": 1.0, "source": "definition: the A40 is the reference GPU"},
        **doc,
    }


_ORDER = ("model", "product_names", "source", *NUMBER_FIELDS, "power_limit_curve")


def render_profile_yaml(doc: Mapping[str, Any], header: str = "") -> str:
    """A profile document as the YAML checked in (stable key order)."""
    ordered = {key: doc[key] for key in _ORDER if key in doc}
    body = yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)
    return header + body


A40_HEADER = (
    "# GENERATED by `python -m lepton.data.sweeps derive` from\n"
    "# lepton/data/gpu-power/summary_power_a40.csv. Do not edit: re-derive.\n"
)
_SWEPT_HEADER = (
    "# Datasheet profile whose power-limit curve, limits, busy draw and energy-optimal limit\n"
    "# are GENERATED by `python -m lepton.data.sweeps derive` from {sweep}.\n"
    "# Edit the datasheet numbers by hand; re-derive the measured ones.\n"
)


def render_a40_yaml(data_dir: Path | None = None) -> str:
    """The checked-in A40 profile's expected text."""
    return render_profile_yaml(derive_a40(data_dir), A40_HEADER)


def render_swept_yaml(model: str, data_dir: Path | None = None) -> str:
    """The checked-in text of a profile with a measured sweep (A40: wholly generated)."""
    if model == "A40":
        return render_a40_yaml(data_dir)
    path = PROFILES_DIR / f"{model.lower()}.yaml"
    doc = dict(yaml.safe_load(path.read_text()))
    doc.update({k: v for k, v in derive_sweep(model, data_dir).items() if k in _MEASURED_KEYS})
    header = _SWEPT_HEADER.format(sweep=f"lepton/data/{SWEEPS[model][0]}")
    return render_profile_yaml(doc, header)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lepton.data.sweeps derive [--check] [--data-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m lepton.data.sweeps")
    sub = parser.add_subparsers(dest="command", required=True)
    derive = sub.add_parser("derive", help="regenerate the profiles of the swept GPU models")
    derive.add_argument("--data-dir", type=Path, default=None)
    derive.add_argument("--check", action="store_true", help="fail if a file would change")
    args = parser.parse_args(argv)
    stale = []
    for model in SWEEPS:
        path = PROFILES_DIR / f"{model.lower()}.yaml"
        text = render_swept_yaml(model, args.data_dir)
        if path.read_text() == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(
            f"stale: {', '.join(stale)}: run `python -m lepton.data.sweeps derive`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
