"""The GPU check's logic over the fake NVML, and its refusal on a machine without NVML."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from lepton_exporter import fake_nvml
from lepton_exporter.fake_nvml import FakeGpu, FakeNvml
from lepton_exporter.gpucheck import EXIT_FAILED, EXIT_NO_NVML, EXIT_OK, run_check


def fake_load(
    fake: FakeNvml, gpu: FakeGpu, seconds: float = 10.0, busy_mw: int = 250_000
) -> Callable[[str], Callable[[], Callable[[], bool]]]:
    """A load that raises the fake GPU's power for ``seconds`` of fake time."""

    def starter(uuid: str) -> Callable[[], Callable[[], bool]]:
        assert uuid == gpu.uuid

        def start() -> Callable[[], bool]:
            end = fake.clock() + seconds
            gpu.power_mw = busy_mw

            def running() -> bool:
                if fake.clock() >= end:
                    gpu.power_mw = 30_000
                    return False
                return True

            return running

        return start

    return starter


def check(fake: FakeNvml, gpu: FakeGpu, lines: list[str]) -> int:
    return run_check(
        fake, 0, fake_load(fake, gpu), out=lines.append, clock=fake.clock, sleep=fake.advance
    )


def test_a_healthy_gpu_passes_energy_and_power_limit_checks() -> None:
    gpu = FakeGpu(uuid="GPU-real")
    fake = FakeNvml([gpu])
    lines: list[str] = []
    assert check(fake, gpu, lines) == EXIT_OK, lines
    assert lines[1].startswith("ok energy")
    assert lines[2].startswith("ok power limit: set 240 W and read it back; restored 300 W")
    assert gpu.power_limit_mw == 300_000
    # Lowered, then restored: two writes.
    assert [mw for _, mw in fake.set_limit_calls] == [240_000, 300_000]


def test_power_readings_that_disagree_with_the_counter_fail() -> None:
    gpu = FakeGpu(uuid="GPU-real")
    fake = FakeNvml([gpu])
    real_power = fake.nvmlDeviceGetPowerUsage
    fake.nvmlDeviceGetPowerUsage = lambda handle: int(real_power(handle) * 1.2)  # type: ignore[method-assign]
    lines: list[str] = []
    assert check(fake, gpu, lines) == EXIT_FAILED
    assert lines[1].startswith("FAIL energy")


def test_a_limit_that_does_not_take_fails() -> None:
    gpu = FakeGpu(uuid="GPU-real", ignore_set_limit=True)
    fake = FakeNvml([gpu])
    lines: list[str] = []
    assert check(fake, gpu, lines) == EXIT_FAILED
    assert "asked 240 W, read back 300 W" in lines[2]


def test_without_privileges_the_limit_check_fails_with_the_reason() -> None:
    gpu = FakeGpu(
        uuid="GPU-real",
        failing_calls={"nvmlDeviceSetPowerManagementLimit": fake_nvml.ERROR_NO_PERMISSION},
    )
    fake = FakeNvml([gpu])
    lines: list[str] = []
    assert check(fake, gpu, lines) == EXIT_FAILED
    assert "CAP_SYS_ADMIN" in lines[2]


def test_a_machine_without_nvml_exits_2_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lepton_exporter.gpucheck"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_NO_NVML
    assert "NVML is not available here" in result.stdout
