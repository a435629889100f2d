"""GPU profiles: data files with sources, the A40 derived from measurements, safe lookups."""

from __future__ import annotations

import csv
import logging
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from lepton.core import profiles
from lepton.core.profiles import (
    NUMBER_FIELDS,
    PROFILES_DIR,
    energy_optimal_power_limit,
    get_profile,
    known_models,
    load_profiles,
)
from lepton.data import data_dir, sweeps

DATA_DIR = data_dir()


def test_every_model_the_issue_names_has_a_profile() -> None:
    assert set(known_models()) == {"A40", "A100", "H100", "L40S", "L4", "T4", "V100", "P100", "A10"}
    assert known_models()[0] == "A40"


@pytest.mark.parametrize("path", sorted(PROFILES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_number_in_a_profile_file_has_a_source(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    for key in NUMBER_FIELDS:
        assert isinstance(doc[key]["value"], (int, float)), key
        assert doc[key]["source"].split(":")[0] in {
            "measured",
            "datasheet",
            "datasheet/nvidia-smi",
            "estimate",
            "assumed",
            "derived",
            "definition",
            "vendor/field note",
        }, (key, doc[key]["source"])
    assert doc["power_limit_curve"]["source"]


def test_datasheet_profiles_say_so_and_the_swept_models_say_measured() -> None:
    for model, profile in load_profiles().items():
        if model == "A40":
            assert profile.source.startswith("measured:")
        else:
            assert profile.source.startswith("datasheet:")
        if model in sweeps.SWEEPS:
            for key in ("power_limit_curve", "busy_power_watts", "min_power_limit_watts"):
                assert profile.sources[key].startswith("measured:"), (model, key)
        else:
            assert profile.sources["max_power_limit_watts"].startswith("datasheet")
            assert profile.sources["power_limit_curve"].startswith("assumed:")


def test_a40_headline_facts_recomputed_from_the_raw_sweep() -> None:
    runs: dict[tuple[str, ...], dict[float, tuple[float, float]]] = defaultdict(dict)
    with (DATA_DIR / sweeps.A40_SWEEP).open() as handle:
        for row in csv.DictReader(handle):
            key = (row["dataset"], row["network"], row["batch_size"], row["optimizer"])
            runs[key][float(row["power_limit"])] = (
                float(row["time_per_epoch"]),
                float(row["average_power"]),
            )
    complete = [r for r in runs.values() if len(r) == 9]
    for limit in (175.0, 200.0):
        speed = statistics.median(r[300.0][0] / r[limit][0] for r in complete)
        energy = statistics.median(
            r[limit][0] * r[limit][1] / (r[300.0][0] * r[300.0][1]) for r in complete
        )
        assert speed >= 0.925
        assert 0.83 <= energy <= 0.875  # 13-16 % less energy
    a40 = get_profile("A40")
    assert a40.speed_at(200) == pytest.approx(0.9577, abs=1e-3)
    assert a40.speed_at(175) == pytest.approx(0.9292, abs=1e-3)


def test_a40_energy_optimal_limit_within_five_percent_is_200_watts() -> None:
    a40 = get_profile("A40")
    assert a40.energy_optimal_power_limit_watts == 200.0
    assert energy_optimal_power_limit(a40, 0.05) == 200.0
    # a looser allowance buys a lower limit; none keeps the default
    assert energy_optimal_power_limit(a40, 0.08) == 175.0
    assert energy_optimal_power_limit(a40, 0.0) == 300.0


@pytest.mark.parametrize("model", [m for m in known_models() if m != "A40"])
def test_datasheet_energy_optimal_limit_is_what_the_curve_gives(model: str) -> None:
    profile = get_profile(model)
    assert energy_optimal_power_limit(profile) == pytest.approx(
        profile.energy_optimal_power_limit_watts, abs=0.5
    )
    assert profile.min_power_limit_watts <= profile.energy_optimal_power_limit_watts
    assert profile.energy_optimal_power_limit_watts <= profile.max_power_limit_watts


@pytest.mark.parametrize("model", known_models())
def test_power_and_speed_are_sane_across_limits(model: str) -> None:
    p = get_profile(model)
    assert p.active_power_watts(0.0) == pytest.approx(p.idle_watts)
    assert p.active_power_watts(1.0) == pytest.approx(p.busy_power_watts)
    assert p.active_power_watts(1.0) <= p.max_power_limit_watts
    assert p.speed_at(None) == pytest.approx(p.relative_speed)
    limits = [
        p.min_power_limit_watts + i * (p.max_power_limit_watts - p.min_power_limit_watts) / 10
        for i in range(11)
    ]
    speeds = [p.speed_at(limit) for limit in limits]
    powers = [p.active_power_watts(1.0, limit) for limit in limits]
    assert speeds == sorted(speeds) and powers == sorted(powers)
    for limit, power in zip(limits, powers, strict=True):
        assert p.idle_watts <= power <= limit + 1e-9
    # utilisation interpolates between idle and busy, and is clamped
    assert p.active_power_watts(0.5) == pytest.approx((p.idle_watts + p.busy_power_watts) / 2)
    assert p.active_power_watts(7.0) == p.active_power_watts(1.0)
    # limits outside the board's range are clamped, as NVML would
    assert p.speed_at(1e6) == p.speed_at(None)
    assert p.speed_at(0.0) == p.speed_at(p.min_power_limit_watts)


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("A40", "A40"),
        ("NVIDIA-A40", "A40"),
        ("nvidia-a40", "A40"),
        ("NVIDIA-A100-SXM4-80GB", "A100"),
        ("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", "A100-MIG-1g"),
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("Tesla-V100-SXM2-32GB", "V100"),
        ("V100M16", "V100"),
        ("Tesla-T4", "T4"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA-L40S", "L40S"),
        ("NVIDIA-L4", "L4"),
        ("Tesla-P100-PCIE-16GB", "P100"),
    ],
)
def test_lookup_by_short_name_or_product_label(name: str, model: str) -> None:
    assert get_profile(name).model == model


@pytest.mark.parametrize("name", ["G2", "NVIDIA-GeForce-RTX-4090", "", "NVIDIA-L40", "💥"])
def test_unknown_model_gets_a_conservative_default_and_a_warning(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    profiles._warn_unknown.cache_clear()
    profile = get_profile(name)
    assert profile.model == profiles.UNKNOWN_MODEL
    assert profile.source.startswith("default:")
    assert "has no profile" in caplog.text
    # conservative: slower than the reference and busier than any known board per unit of work
    worst_known = max(p.busy_power_watts / p.relative_speed for p in load_profiles().values())
    assert profile.relative_speed < 1.0
    assert profile.busy_power_watts / profile.relative_speed >= worst_known
    assert profile.energy_optimal_power_limit_watts == profile.max_power_limit_watts


@pytest.mark.parametrize(
    ("product", "slices"),
    [
        ("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", 1),
        ("NVIDIA-A100-SXM4-40GB-MIG-3g.20gb", 3),
        ("NVIDIA-H100-80GB-HBM3-MIG-7g.80gb", 7),
    ],
)
def test_a_mig_slice_is_its_fraction_of_the_board(product: str, slices: int) -> None:
    slice_, board = get_profile(product), get_profile(product.split("-MIG-")[0])
    fraction = slices / 7
    assert slice_.relative_speed == pytest.approx(board.relative_speed * fraction)
    assert slice_.idle_watts == pytest.approx(board.idle_watts * fraction)
    assert slice_.busy_power_at(None) == pytest.approx(board.busy_power_at(None) * fraction)
    # the board's curve applies unchanged: the slice at the board's optimal limit fraction
    assert slice_.speed_at(slice_.energy_optimal_power_limit_watts) == pytest.approx(
        board.speed_at(board.energy_optimal_power_limit_watts) * fraction
    )
    assert slice_.source.startswith("derived:")
