"""The real-GPU check script's logic, run over the fake A40 NVML."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lepton.hw.fake_nvml import A40_DEFAULT_LIMIT_WATTS, FakeNvml, curve_fleet, median_a40_curve
from lepton.sdk.gpucheck import (
    EXIT_NO_NVML,
    EXIT_NO_PERMISSION,
    EXIT_NO_WORKLOAD,
    Workload,
    WorkloadUnavailableError,
    run_check,
)


def fake_workload(fake: FakeNvml) -> Workload:
    return Workload("fake A40 step", lambda _: fake.run_step(), None)


def test_check_reports_energy_per_step_at_every_limit_and_the_choice(
    shipped_data: Path, tmp_path: Path
) -> None:
    curve = median_a40_curve(shipped_data)
    fake = curve_fleet(curve)
    out, err = io.StringIO(), io.StringIO()
    code = run_check(
        minutes=3,
        nvml=fake,
        workload_factory=lambda: fake_workload(fake),
        clock=fake.clock,
        output=tmp_path / "gpucheck.json",
        out=out,
        err=err,
    )
    assert code == 0, err.getvalue()
    document = json.loads((tmp_path / "gpucheck.json").read_text())
    (run,) = document["optimizeRuns"]
    measured = {m["power_limit_watts"]: m for m in run["measurements"]}
    assert sorted(measured) == curve.limits_watts
    for limit, m in measured.items():
        assert m["joules_per_step"] == pytest.approx(curve.joules_per_step(limit), rel=1e-3)
        assert m["seconds"] >= 8.0  # the default window per limit
    base = curve.seconds_per_step(A40_DEFAULT_LIMIT_WATTS)
    allowed = [
        limit for limit in curve.limits_watts if curve.seconds_per_step(limit) <= base * 1.05
    ]
    want = min(allowed, key=curve.joules_per_step)
    assert run["chosen_power_limit_watts"] == want
    assert document["powerLimit"]["energySavedFraction"] > 0
    text = out.getvalue()
    assert "J/step" in text and "<- chosen" in text
    assert f"{want:.0f} W (default 300 W)" in text
    # Trained for the asked three (fake) minutes, and gave the GPU its default back.
    assert document["phases"][0]["durationSeconds"] >= 180
    assert fake.gpus[0].limit_watts == A40_DEFAULT_LIMIT_WATTS


def test_check_without_nvml_exits_non_zero_and_says_why(shipped_data: Path) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data), library_present=False)
    err = io.StringIO()
    code = run_check(nvml=fake, workload_factory=lambda: fake_workload(fake), err=err)
    assert code == EXIT_NO_NVML
    assert "needs an NVIDIA GPU with NVML" in err.getvalue()
    assert "Library Not Found" in err.getvalue()


def test_check_without_permission_exits_non_zero_and_says_how_to_fix_it(
    shipped_data: Path,
) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data), can_set_limits=False)
    err = io.StringIO()
    code = run_check(nvml=fake, workload_factory=lambda: fake_workload(fake), err=err)
    assert code == EXIT_NO_PERMISSION
    assert "CAP_SYS_ADMIN" in err.getvalue()
    assert fake.steps == 0


def test_check_without_pytorch_exits_non_zero_and_says_what_to_install(
    shipped_data: Path,
) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data))

    def no_torch() -> Workload:
        raise WorkloadUnavailableError("PyTorch is not installed: pip install torch")

    err = io.StringIO()
    assert run_check(nvml=fake, workload_factory=no_torch, err=err) == EXIT_NO_WORKLOAD
    assert "pip install torch" in err.getvalue()
