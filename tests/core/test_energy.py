"""The energy model: durations, energies and the chosen power limit."""

from __future__ import annotations

import math

import pytest

from lepton.core.energy import (
    chosen_power_limit_watts,
    host_idle_watts,
    job_duration_seconds,
    job_energy_watt_hours,
    node_idle_watts,
)
from lepton.core.profiles import get_profile, known_models


def test_one_reference_gpu_hour_takes_an_hour_on_the_a40_at_its_default_limit() -> None:
    assert job_duration_seconds("A40", 1.0, 1) == pytest.approx(3600.0)
    assert job_energy_watt_hours("A40", 1.0, 1) == pytest.approx(
        get_profile("A40").busy_power_watts
    )


def test_work_spreads_over_gpus_and_faster_models_finish_sooner() -> None:
    assert job_duration_seconds("A40", 8.0, 4) == pytest.approx(2 * 3600.0)
    assert job_duration_seconds("H100", 1.0, 1) < job_duration_seconds("A40", 1.0, 1)
    assert job_duration_seconds("T4", 1.0, 1) > job_duration_seconds("A40", 1.0, 1)
    # energy does not depend on how many GPUs share the work (linear scaling)
    assert job_energy_watt_hours("A100", 8.0, 4) == pytest.approx(
        job_energy_watt_hours("A100", 8.0, 1)
    )


def test_a40_energy_optimal_limit_saves_energy_at_a_small_slowdown() -> None:
    a40 = get_profile("A40")
    limit = chosen_power_limit_watts(a40, "Auto")
    assert limit == 200.0
    slow = job_duration_seconds("A40", 1.0, 1, limit) / job_duration_seconds("A40", 1.0, 1)
    saved = 1 - job_energy_watt_hours("A40", 1.0, 1, limit) / job_energy_watt_hours("A40", 1.0, 1)
    assert 1.0 < slow <= 1.05
    assert 0.10 <= saved <= 0.16


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        ("Auto", 200.0),
        ("auto", 200.0),
        ("None", 300.0),
        ("250", 250.0),
        ("250W", 250.0),
        ("1000", 300.0),
        ("10", 100.0),
        ("", 200.0),
    ],
)
def test_chosen_power_limit(cap: str, expected: float) -> None:
    assert chosen_power_limit_watts(get_profile("A40"), cap) == expected


@pytest.mark.parametrize("cap", ["lots", "-5", "nan", "0"])
def test_unreadable_power_cap_says_how_to_fix_it(cap: str) -> None:
    with pytest.raises(ValueError, match="powerCap"):
        chosen_power_limit_watts(get_profile("A40"), cap)


@pytest.mark.parametrize("model", [*known_models(), "SomethingNew"])
def test_estimates_are_finite_and_positive_for_every_model(model: str) -> None:
    for cap in ("Auto", "None"):
        limit = chosen_power_limit_watts(get_profile(model), cap)
        d = job_duration_seconds(model, 2.5, 2, limit)
        e = job_energy_watt_hours(model, 2.5, 2, limit)
        assert math.isfinite(d) and d > 0
        assert math.isfinite(e) and e > 0


def test_zero_work_costs_nothing_and_zero_gpus_counts_as_one() -> None:
    assert job_energy_watt_hours("A40", 0.0, 1) == 0.0
    assert job_duration_seconds("A40", 1.0, 0) == job_duration_seconds("A40", 1.0, 1)


def test_node_idle_power_counts_host_and_every_gpu() -> None:
    assert host_idle_watts(8) == 300.0  # 100 W host + 25 W per GPU slot (estimate)
    assert node_idle_watts(get_profile("A40"), 8) == host_idle_watts(8) + 8 * 30.0
    assert node_idle_watts(get_profile("A40"), 8, host_watts=450.0) == 450.0 + 8 * 30.0
