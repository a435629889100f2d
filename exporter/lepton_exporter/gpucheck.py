"""Checks the NVML backend against a real NVIDIA GPU: ``make gpu-check``.

The unit tests run over a fake NVML; this script is the one place where the
exporter's assumptions meet a real driver. It reads the GPU's power, runs a
ten-second load, checks that the energy counter's increase agrees with the
integral of the sampled power within 5 %, then lowers the power limit, reads
it back and restores it (power limits need root or CAP_SYS_ADMIN). On a
machine without NVML it exits 2 with the reason; a failed check exits 1.

    python -m lepton_exporter.gpucheck [--index 0] [--load-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lepton.core.metering import integrate_power_joules

# A matrix-multiply loop on the GPU named by CUDA_VISIBLE_DEVICES, with
# whichever of PyTorch or CuPy is installed.
LOAD_SCRIPT = """
import sys, time
seconds = float(sys.argv[1])
try:
    import torch
    a = torch.randn(8192, 8192, device="cuda")
    def step():
        (a @ a).sum().item()
except ImportError:
    try:
        import cupy
        a = cupy.random.rand(8192, 8192, dtype=cupy.float32)
        def step():
            (a @ a).sum().item()
    except ImportError:
        sys.exit("gpucheck needs PyTorch or CuPy for its GPU load: pip install torch")
end = time.monotonic() + seconds
while time.monotonic() < end:
    step()
"""

ENERGY_TOLERANCE = 0.05  # the acceptance bound
LIMIT_TOLERANCE_WATTS = 1.0
EXIT_OK, EXIT_FAILED, EXIT_NO_NVML = 0, 1, 2

LoadStarter = Callable[[], Callable[[], bool]]


@dataclass
class EnergyCheck:
    """The counter's and the integral's joules over the same window."""

    counter_joules: float
    integrated_joules: float
    seconds: float
    peak_watts: float

    @property
    def relative_error(self) -> float:
        if self.counter_joules <= 0:
            return float("inf")
        return abs(self.integrated_joules - self.counter_joules) / self.counter_joules


def measure_energy(
    nvml: Any,
    handle: Any,
    start_load: LoadStarter,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    step_seconds: float = 0.05,
    lead_seconds: float = 2.0,
    tail_seconds: float = 3.0,
) -> EnergyCheck:
    """Sample power through a load, with idle margins before and after.

    NVML's power reading is a one-second average on most Ampere parts, so it
    lags the load; the idle margins let the integral catch up with the counter.
    """
    start_counter = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    start = clock()
    last_time, last_watts = start, nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
    integrated, peak = 0.0, last_watts
    phase_end: float | None = start + lead_seconds
    running: Callable[[], bool] | None = None
    while True:
        sleep(step_seconds)
        now = clock()
        watts = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        integrated += integrate_power_joules(last_watts, watts, now - last_time)
        last_time, last_watts, peak = now, watts, max(peak, watts)
        if running is None and phase_end is not None and now >= phase_end:
            running = start_load()
            phase_end = None
        elif running is not None and phase_end is None and not running():
            phase_end = now + tail_seconds
        elif running is not None and phase_end is not None and now >= phase_end:
            break
    end_counter = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    return EnergyCheck(
        counter_joules=(end_counter - start_counter) / 1000.0,
        integrated_joules=integrated,
        seconds=last_time - start,
        peak_watts=peak,
    )


def check_power_limit(nvml: Any, handle: Any) -> tuple[bool, str]:
    """Lower the limit by a fifth (within the constraints), read it back, restore it."""
    original_mw = int(nvml.nvmlDeviceGetPowerManagementLimit(handle))
    min_mw, _max_mw = (int(v) for v in nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle))
    target_mw = max(min_mw, int(original_mw * 0.8) // 1000 * 1000)
    if target_mw >= original_mw:
        return False, f"the limit is already at its floor ({original_mw / 1000:.0f} W)"
    messages: list[str] = []
    ok = True
    try:
        nvml.nvmlDeviceSetPowerManagementLimit(handle, target_mw)
        read_back = int(nvml.nvmlDeviceGetPowerManagementLimit(handle))
        if abs(read_back - target_mw) >= LIMIT_TOLERANCE_WATTS * 1000:
            ok = False
            messages.append(f"asked {target_mw / 1000:.0f} W, read back {read_back / 1000:.0f} W")
        else:
            messages.append(f"set {target_mw / 1000:.0f} W and read it back")
    finally:
        nvml.nvmlDeviceSetPowerManagementLimit(handle, original_mw)
        restored = int(nvml.nvmlDeviceGetPowerManagementLimit(handle))
        if abs(restored - original_mw) >= LIMIT_TOLERANCE_WATTS * 1000:
            ok = False
            messages.append(f"restore failed: {restored / 1000:.0f} W in force")
        else:
            messages.append(f"restored {original_mw / 1000:.0f} W")
    return ok, "; ".join(messages)


def subprocess_load(uuid: str, seconds: float) -> LoadStarter:
    """Starts LOAD_SCRIPT pinned to the GPU with ``uuid``; returns its is-running poll."""

    def start() -> Callable[[], bool]:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": uuid}
        process = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, str(seconds)], env=env)

        def running() -> bool:
            code = process.poll()
            if code not in (None, 0):
                raise RuntimeError(f"the GPU load exited with {code}")
            return code is None

        return running

    return start


def run_check(
    nvml: Any,
    index: int,
    start_load: Callable[[str], LoadStarter],
    out: Callable[[str], None] = print,
    **measure: Any,
) -> int:
    """The whole check; returns the process exit code."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as error:
        out(
            f"gpucheck: NVML is not available here ({error}). Run it on a machine with an "
            "NVIDIA GPU and driver (nvidia-smi must work)."
        )
        return EXIT_NO_NVML
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = str(nvml.nvmlDeviceGetUUID(handle))
        name = str(nvml.nvmlDeviceGetName(handle))
        out(f"GPU {index}: {name} {uuid}, {nvml.nvmlDeviceGetPowerUsage(handle) / 1000:.1f} W")
        try:
            energy = measure_energy(nvml, handle, start_load(uuid), **measure)
        except nvml.NVMLError as error:
            out(f"FAIL energy: {error} (a GPU older than Volta has no energy counter)")
            return EXIT_FAILED
        verdict = "ok" if energy.relative_error <= ENERGY_TOLERANCE else "FAIL"
        out(
            f"{verdict} energy: counter {energy.counter_joules:.1f} J, integrated power "
            f"{energy.integrated_joules:.1f} J over {energy.seconds:.1f} s "
            f"(peak {energy.peak_watts:.0f} W), difference {energy.relative_error:.2%} "
            f"(bound {ENERGY_TOLERANCE:.0%})"
        )
        try:
            limit_ok, message = check_power_limit(nvml, handle)
        except nvml.NVMLError as error:
            limit_ok, message = False, f"{error} (power limits need root or CAP_SYS_ADMIN)"
        out(f"{'ok' if limit_ok else 'FAIL'} power limit: {message}")
        return EXIT_OK if verdict == "ok" and limit_ok else EXIT_FAILED
    finally:
        nvml.nvmlShutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--index", type=int, default=0, help="NVML index of the GPU to check")
    parser.add_argument("--load-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    import pynvml

    return run_check(pynvml, args.index, lambda uuid: subprocess_load(uuid, args.load_seconds))


if __name__ == "__main__":
    sys.exit(main())
