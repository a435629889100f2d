"""Checks the NVML backend against a real NVIDIA GPU: ``make gpu-check``.

The unit tests run over a fake NVML; this script is the one place where the
exporter's assumptions meet a real driver. It reads the GPU's power, runs a
ten-second load, checks that the energy counter's increase agrees with the
integral of the sampled power within 5 %, then lowers the power limit, reads
it back and restores it (power limits need root or CAP_SYS_ADMIN).

Then the sharing check: two processes with different loads (80 % and 20 % duty)
on the one GPU, metered by the exporter's own backend and accountant as two
pods time-slicing it; the split of the active energy must follow the processes'
SM utilisation, read independently through NVML's own cursor, within 2 points,
and pods + idle + unattributed must equal the device. On a board in MIG mode
(the check never changes the mode) a load runs on the first MIG device instead,
and its slice must get the active energy, the others none.

On a machine without NVML it exits 2 with the reason; a failed check exits 1.

    python -m lepton_exporter.gpucheck [--index 0] [--load-seconds 10] [--sharing-seconds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lepton.core.metering import integrate_power_joules
from lepton.hw.nvml import PowerLimitError, as_text, set_power_limit_mw

# A matrix-multiply loop on the GPU named by CUDA_VISIBLE_DEVICES, with
# whichever of PyTorch or CuPy is installed.
LOAD_SCRIPT = """
import sys, time
seconds = float(sys.argv[1])
duty = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
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
period = 0.2
while time.monotonic() < end:
    busy_until = time.monotonic() + period * duty
    while time.monotonic() < busy_until:
        step()
    if duty < 1.0:
        time.sleep(period * (1.0 - duty))
"""

ENERGY_TOLERANCE = 0.05  # the acceptance bound
EXIT_OK, EXIT_FAILED, EXIT_NO_NVML = 0, 1, 2

LoadStarter = Callable[[], Callable[[], bool]]
# (device UUID, seconds, duty cycle 0..1) -> (the load's PID, its is-running poll).
ProcessStarter = Callable[[str, float, float], tuple[int, Callable[[], bool]]]
SHARE_TOLERANCE = 0.02  # the bound on the 80/20 split
DUTIES = (0.8, 0.2)
# Before the load's CUDA context shows up the board's active draw is split by slice size.
MIG_LOADED_SHARE = 0.9
# The most a load may take to start (import PyTorch, create its CUDA context).
WARMUP_SECONDS = 60.0


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
    """Lower the limit by a fifth (within the constraints), read it back, restore it.

    Both writes go through :func:`lepton.hw.nvml.set_power_limit_mw`, as the exporter's
    power capper and the SDK set limits: the check tests the path they use.
    """
    original_mw = int(nvml.nvmlDeviceGetPowerManagementLimit(handle))
    min_mw, _max_mw = (int(v) for v in nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle))
    target_mw = max(min_mw, int(original_mw * 0.8) // 1000 * 1000)
    if target_mw >= original_mw:
        return False, f"the limit is already at its floor ({original_mw / 1000:.0f} W)"
    uuid = as_text(nvml.nvmlDeviceGetUUID(handle))
    messages: list[str] = []
    ok = True
    try:
        set_power_limit_mw(nvml, handle, target_mw, uuid=uuid)
        messages.append(f"set {target_mw / 1000:.0f} W and read it back")
    except PowerLimitError as error:
        ok = False
        if error.read_back_mw is None:
            messages.append(str(error))
        else:
            messages.append(
                f"asked {target_mw / 1000:.0f} W, read back {error.read_back_mw / 1000:.0f} W"
            )
    finally:
        try:
            set_power_limit_mw(nvml, handle, original_mw, uuid=uuid)
            messages.append(f"restored {original_mw / 1000:.0f} W")
        except PowerLimitError as error:
            ok = False
            messages.append(f"restore failed: {error}")
    return ok, "; ".join(messages)


def start_process(uuid: str, seconds: float, duty: float = 1.0) -> tuple[int, Callable[[], bool]]:
    """Starts LOAD_SCRIPT pinned to the GPU or MIG device ``uuid``; returns its PID and poll."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": uuid}
    process = subprocess.Popen(
        [sys.executable, "-c", LOAD_SCRIPT, str(seconds), str(duty)], env=env
    )

    def running() -> bool:
        code = process.poll()
        if code not in (None, 0):
            raise RuntimeError(f"the GPU load exited with {code}")
        return code is None

    return process.pid, running


def subprocess_load(uuid: str, seconds: float) -> LoadStarter:
    """Starts LOAD_SCRIPT pinned to the GPU with ``uuid``; returns its is-running poll."""

    def start() -> Callable[[], bool]:
        return start_process(uuid, seconds)[1]

    return start


@dataclass
class SharingCheck:
    """The exporter's split of a shared GPU beside the SM utilisation NVML reported."""

    ok: bool
    lines: list[str]


def check_sharing(
    nvml: Any,
    index: int,
    start: ProcessStarter,
    seconds: float = 20.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval_seconds: float = 1.0,
) -> SharingCheck:
    """Two loads on one GPU (or one on a MIG device), metered as the exporter meters pods."""
    from lepton_exporter.accounting import Accountant
    from lepton_exporter.nvml import NvmlBackend
    from lepton_exporter.readings import PodRef

    backend = NvmlBackend(nvml, "gpucheck")
    backend.start()
    try:
        first = backend.read()
        if not first.gpus or len(first.gpus) <= index:
            return SharingCheck(False, [f"FAIL sharing: no GPU at index {index}"])
        gpu = first.gpus[index]
        pods = [PodRef("gpucheck", f"load-{int(d * 100)}", "load") for d in DUTIES]
        accountant = Accountant()
        holders: dict[str, list[PodRef]]
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        total_seconds = seconds + WARMUP_SECONDS
        if gpu.mig_slices:
            target = gpu.mig_slices[0]
            pid, running = start(target.uuid, total_seconds, 1.0)
            holders = {
                m.uuid: [PodRef("gpucheck", f"mig-{m.gpu_instance_id}", "load")]
                for m in gpu.mig_slices
            }
            pid_to_pod: dict[int, PodRef] = {pid: holders[target.uuid][0]}
            runnings = [running]
            watched = _mig_handle(nvml, handle, target.uuid)
        else:
            started = [start(gpu.uuid, total_seconds, duty) for duty in DUTIES]
            pid_to_pod = {pid: pod for (pid, _), pod in zip(started, pods, strict=True)}
            holders = {gpu.uuid: pods}
            runnings = [r for _, r in started]
            watched = handle
        # Wait for the loads' CUDA contexts: NVML lists a process once it holds one.
        deadline = clock() + WARMUP_SECONDS
        while True:
            listed = {int(p.pid) for p in nvml.nvmlDeviceGetComputeRunningProcesses(watched)}
            if set(pid_to_pod) <= listed:
                break
            if clock() >= deadline or not all(r() for r in runnings):
                return SharingCheck(
                    False,
                    [
                        f"FAIL sharing: the loads' PIDs {sorted(pid_to_pod)} are not among the "
                        f"GPU's processes {sorted(listed)} after {WARMUP_SECONDS:.0f} s (run "
                        "gpucheck in the host's PID namespace: NVML names processes by host PID)"
                    ],
                )
            sleep(interval_seconds)
        cursor = 0
        if not gpu.mig_slices:
            with contextlib.suppress(nvml.NVMLError):
                for s in nvml.nvmlDeviceGetProcessUtilization(handle, 0):
                    cursor = max(cursor, int(s.timeStamp))
        accountant.record(backend.read(), clock(), "gpucheck", holders, pid_to_pod.get)
        sm: dict[int, float] = dict.fromkeys(pid_to_pod, 0.0)
        end = clock() + seconds
        while clock() < end and all(r() for r in runnings):
            sleep(interval_seconds)
            accountant.record(backend.read(), clock(), "gpucheck", holders, pid_to_pod.get)
            if not gpu.mig_slices:
                try:
                    samples = nvml.nvmlDeviceGetProcessUtilization(handle, cursor)
                except nvml.NVMLError:
                    samples = []
                for s in samples:
                    cursor = max(cursor, int(s.timeStamp))
                    if int(s.pid) in sm:
                        sm[int(s.pid)] += float(s.smUtil)
        account = next(a for a in accountant.snapshot().gpus if a.uuid == gpu.uuid)
    finally:
        backend.stop()
    return _sharing_verdict(account, gpu.mig_slices != (), pid_to_pod, sm, holders)


def _mig_handle(nvml: Any, handle: Any, uuid: str) -> Any:
    """The handle of the MIG device ``uuid`` of the board ``handle``."""
    for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nvml.NVMLError:
            continue
        if as_text(nvml.nvmlDeviceGetUUID(mig)) == uuid:
            return mig
    raise RuntimeError(f"MIG device {uuid} disappeared during the check")


def _sharing_verdict(
    account: Any,
    mig: bool,
    pid_to_pod: dict[int, Any],
    sm: dict[int, float],
    holders: dict[str, list[Any]],
) -> SharingCheck:
    lines: list[str] = []
    active = dict[Any, float]()
    methods: set[str] = set()
    for (pod, method), joules in account.pod_active_joules_total.items():
        active[pod] = active.get(pod, 0.0) + joules
        methods.add(method)
    unattributed = sum(account.unattributed_joules_total.values())
    total = sum(active.values()) + account.idle_joules_total + unattributed
    balanced = abs(total - account.energy_joules_total) <= 1e-6 * max(
        account.energy_joules_total, 1
    )
    lines.append(
        f"{'ok' if balanced else 'FAIL'} invariant: pods {sum(active.values()):.1f} J + idle "
        f"{account.idle_joules_total:.1f} J + unattributed {unattributed:.1f} J = device "
        f"{account.energy_joules_total:.1f} J"
    )
    ok = balanced
    if mig:
        loaded = next(iter(pid_to_pod.values()))
        mine = active.get(loaded, 0.0)
        share = mine / sum(active.values()) if sum(active.values()) > 0 else 0.0
        mig_ok = share >= MIG_LOADED_SHARE
        lines.append(
            f"{'ok' if mig_ok else 'FAIL'} MIG: the loaded slice got {share:.1%} of the "
            f"active energy ({mine:.1f} J; bound {MIG_LOADED_SHARE:.0%}), the other "
            f"{len(holders) - 1} the rest (source=mig_model: a model)"
        )
        return SharingCheck(ok and mig_ok, lines)
    (high_pid, high), (_, low) = list(pid_to_pod.items())[:2]  # DUTIES' order
    split_total = active.get(high, 0.0) + active.get(low, 0.0)
    sm_total = sum(sm.values())
    if sm_total <= 0 or split_total <= 0:
        lines.append(
            "FAIL sharing: the driver reported no per-process SM utilisation for the loads "
            f"(the exporter fell back to {', '.join(sorted(methods)) or 'nothing'}); "
            "some drivers (vGPU, MIG, old parts) do not sample per process"
        )
        return SharingCheck(False, lines)
    measured = sm[high_pid] / sm_total
    split = active.get(high, 0.0) / split_total
    # The busier load must also be the one NVML saw busier, or the samples mean nothing.
    share_ok = (
        abs(split - measured) <= SHARE_TOLERANCE and "sm_utilization" in methods and measured > 0.5
    )
    lines.append(
        f"{'ok' if share_ok else 'FAIL'} sharing: the {DUTIES[0]:.0%}-duty load got "
        f"{split:.1%} of the active energy, its SM utilisation share was {measured:.1%} "
        f"(bound {SHARE_TOLERANCE:.0%} points; attribution {', '.join(sorted(methods))}; "
        f"duty cycles {DUTIES[0]:.0%}/{DUTIES[1]:.0%})"
    )
    return SharingCheck(ok and share_ok, lines)


def run_check(
    nvml: Any,
    index: int,
    start_load: Callable[[str], LoadStarter],
    out: Callable[[str], None] = print,
    sharing: Callable[[], SharingCheck] | None = None,
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
        uuid = as_text(nvml.nvmlDeviceGetUUID(handle))
        name = as_text(nvml.nvmlDeviceGetName(handle))
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
        sharing_ok = True
        if sharing is not None:
            try:
                shared = sharing()
            except (nvml.NVMLError, RuntimeError) as error:
                shared = SharingCheck(False, [f"FAIL sharing: {error}"])
            for line in shared.lines:
                out(line)
            sharing_ok = shared.ok
        return EXIT_OK if verdict == "ok" and limit_ok and sharing_ok else EXIT_FAILED
    finally:
        nvml.nvmlShutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--index", type=int, default=0, help="NVML index of the GPU to check")
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument(
        "--sharing-seconds", type=float, default=20.0, help="0 skips the sharing check"
    )
    args = parser.parse_args(argv)
    import pynvml

    def sharing() -> SharingCheck:
        return check_sharing(pynvml, args.index, start_process, args.sharing_seconds)

    return run_check(
        pynvml,
        args.index,
        lambda uuid: subprocess_load(uuid, args.load_seconds),
        sharing=sharing if args.sharing_seconds > 0 else None,
    )


if __name__ == "__main__":
    sys.exit(main())
