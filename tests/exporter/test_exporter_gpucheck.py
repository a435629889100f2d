"""The GPU check's logic over the fake NVML, and its refusal on a machine without NVML."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from lepton_exporter.gpucheck import (
    EXIT_FAILED,
    EXIT_NO_NVML,
    EXIT_OK,
    SharingCheck,
    check_sharing,
    run_check,
)

from lepton.hw import fake_nvml
from lepton.hw.fake_nvml import FakeGpu, FakeNvml, mig_gpu


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


def fake_processes(
    fake: FakeNvml, gpu: FakeGpu, *, mig: bool = False
) -> Callable[[str, float, float], tuple[int, Callable[[], bool]]]:
    """Loads as fake processes: each holds the GPU at its duty cycle's SM for ``seconds``."""
    pids = iter(range(4000, 5000))

    def start(uuid: str, seconds: float, duty: float) -> tuple[int, Callable[[], bool]]:
        pid = next(pids)
        end = fake.clock() + seconds
        if mig:
            device = next(d for d in gpu.mig_devices if d is not None and d.uuid == uuid)
            device.running[pid] = 1 << 30
        else:
            assert uuid == gpu.uuid
            gpu.processes[pid] = int(duty * 100)
            if gpu.running is not None:
                gpu.running[pid] = int(duty * 10) << 30
        gpu.power_mw = 250_000

        def running() -> bool:
            return fake.clock() < end

        return pid, running

    return start


def test_two_loads_sharing_one_gpu_are_split_by_their_sm_utilisation() -> None:
    gpu = FakeGpu(uuid="GPU-real")
    fake = FakeNvml([gpu])
    result = check_sharing(
        fake, 0, fake_processes(fake, gpu), seconds=20, clock=fake.clock, sleep=fake.advance
    )
    assert result.ok, result.lines
    assert result.lines[0].startswith("ok invariant")
    assert "got 80.0% of the active energy, its SM utilisation share was 80.0%" in result.lines[1]


def test_a_driver_without_per_process_samples_fails_the_sharing_check_with_the_reason() -> None:
    gpu = FakeGpu(
        uuid="GPU-real",
        failing_calls={"nvmlDeviceGetProcessUtilization": fake_nvml.ERROR_NOT_SUPPORTED},
        running={},
    )
    fake = FakeNvml([gpu])
    result = check_sharing(
        fake, 0, fake_processes(fake, gpu), seconds=10, clock=fake.clock, sleep=fake.advance
    )
    assert not result.ok
    assert "no per-process SM utilisation" in result.lines[-1]
    assert "process_memory" in result.lines[-1]


def test_loads_nvml_cannot_see_fail_with_the_pid_namespace_hint() -> None:
    gpu = FakeGpu(uuid="GPU-real")
    fake = FakeNvml([gpu])

    def invisible(uuid: str, seconds: float, duty: float) -> tuple[int, Callable[[], bool]]:
        return 123, lambda: True  # a container's PID: NVML lists host PIDs

    result = check_sharing(fake, 0, invisible, seconds=5, clock=fake.clock, sleep=fake.advance)
    assert not result.ok
    assert "host's PID namespace" in result.lines[0]


def test_on_a_mig_board_the_loaded_slice_gets_the_active_energy() -> None:
    gpu = mig_gpu("GPU-mig", [(3, "3g.40gb"), (2, "2g.20gb"), (1, "1g.10gb")])
    fake = FakeNvml([gpu])
    result = check_sharing(
        fake,
        0,
        fake_processes(fake, gpu, mig=True),
        seconds=10,
        clock=fake.clock,
        sleep=fake.advance,
    )
    assert result.ok, result.lines
    assert "ok MIG: the loaded slice got 100.0% of the active energy" in result.lines[1]


def test_the_whole_check_reports_the_sharing_lines_and_fails_on_them() -> None:
    gpu = FakeGpu(uuid="GPU-real")
    fake = FakeNvml([gpu])
    lines: list[str] = []
    code = run_check(
        fake,
        0,
        fake_load(fake, gpu),
        out=lines.append,
        sharing=lambda: SharingCheck(False, ["FAIL sharing: test"]),
        clock=fake.clock,
        sleep=fake.advance,
    )
    assert code == EXIT_FAILED
    assert lines[-1] == "FAIL sharing: test"
