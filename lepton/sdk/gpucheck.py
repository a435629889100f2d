"""A check on a real NVIDIA GPU: does the optimizer save energy there, and how much?

``python -m lepton.sdk.gpucheck`` trains a small convolutional network on
synthetic images with PyTorch for a few minutes under ``LeptonEngine.optimize``
and prints the time and measured energy per step at every power limit it tried,
the limit it chose and the energy saved against the default limit; ``--output``
saves it all as JSON. It needs NVML, permission to set power limits (root or
CAP_SYS_ADMIN) and PyTorch with CUDA, and exits non-zero saying which is
missing. The logic takes its NVML module, workload and clock as arguments, so
the tests run it over a fake NVML.

Exit codes: 0 tuned; 2 no NVML/GPU; 3 no PyTorch with CUDA; 4 power limits
cannot be set; 5 ran but could not tune (the message says why).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from lepton.core.errors import LeptonError
from lepton.hw.nvml import NvmlGpu, NvmlUnavailableError, PowerLimitError, open_gpus
from lepton.sdk.engine import LeptonEngine
from lepton.sdk.meters import CpuModelMeter, Meter, NvmlEnergyMeter
from lepton.sdk.optimizer import OptimizerConfig, candidate_power_limits

EXIT_NO_NVML = 2
EXIT_NO_WORKLOAD = 3
EXIT_NO_PERMISSION = 4
EXIT_NOT_TUNED = 5


class WorkloadUnavailableError(LeptonError, RuntimeError):
    """The training workload cannot run here (no PyTorch, or no CUDA device)."""


@dataclass
class Workload:
    """One training step and a way to wait for the GPU to finish it."""

    description: str
    step: Callable[[int], object]
    synchronize: Callable[[], object] | None


def torch_workload(batch_size: int = 256) -> Workload:
    """A small CNN on synthetic 32x32 images, trained with SGD on ``cuda:0``."""
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        raise WorkloadUnavailableError(
            "PyTorch is not installed: pip install torch (a CUDA build)"
        ) from None
    if not torch.cuda.is_available():
        raise WorkloadUnavailableError(
            "PyTorch sees no CUDA device: install a CUDA build of torch, and check "
            "CUDA_VISIBLE_DEVICES and the container's GPU request"
        )
    nn = torch.nn
    device = torch.device("cuda", 0)
    torch.backends.cudnn.benchmark = True
    model = nn.Sequential(
        nn.Conv2d(3, 128, 3, padding=1),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.Conv2d(128, 256, 3, padding=1),
        nn.BatchNorm2d(256),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(256, 512, 3, padding=1),
        nn.BatchNorm2d(512),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(512, 10),
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images = torch.randn(batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step(_: int) -> object:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    name = torch.cuda.get_device_name(device)
    return Workload(
        description=f"PyTorch {torch.__version__} CNN, batch {batch_size}, on {name}",
        step=step,
        synchronize=torch.cuda.synchronize,
    )


def _steps(engine: LeptonEngine, clock: Callable[[], float], seconds: float) -> Iterator[int]:
    """Step indices for ``seconds``, and on until profiling is done (at most thrice as long)."""
    start, index = clock(), 0
    while True:
        elapsed = clock() - start
        optimizer = engine.active_optimizer
        profiling = optimizer is not None and not optimizer.profiling_done
        if elapsed >= 3 * seconds or (elapsed >= seconds and not profiling):
            return
        yield index
        index += 1


def run_check(
    *,
    minutes: float = 4.0,
    max_slowdown: float = 0.05,
    window_seconds: float = 8.0,
    gpu_index: int = 0,
    output: Path | None = None,
    nvml: Any = None,
    workload_factory: Callable[[], Workload] = torch_workload,
    clock: Callable[[], float] = time.monotonic,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Run the check; returns the process exit code (see the module docstring)."""
    try:
        gpus = open_gpus(nvml)
    except NvmlUnavailableError as error:
        print(f"gpucheck: needs an NVIDIA GPU with NVML: {error}", file=err)
        return EXIT_NO_NVML
    if not 0 <= gpu_index < len(gpus):
        print(f"gpucheck: --gpu-index {gpu_index}: NVML sees {len(gpus)} GPU(s)", file=err)
        return EXIT_NO_NVML
    gpu: NvmlGpu = gpus[gpu_index]
    if len(gpus) > 1:
        print(
            f"note: {len(gpus)} GPUs visible; tuning and metering NVML GPU {gpu_index} "
            f"({gpu.uuid}) while PyTorch trains on cuda:0 - make them the same board "
            "(CUDA_VISIBLE_DEVICES=<uuid>)",
            file=out,
        )
    try:
        gpu.set_power_limit_watts(gpu.power_limit_watts())  # a no-op that proves permission
    except PowerLimitError as error:
        print(f"gpucheck: {error}", file=err)
        return EXIT_NO_PERMISSION
    try:
        workload = workload_factory()
    except WorkloadUnavailableError as error:
        print(f"gpucheck: {error}", file=err)
        return EXIT_NO_WORKLOAD

    low, high = gpu.power_limit_range_watts()
    default = gpu.default_power_limit_watts()
    settings = OptimizerConfig(
        max_slowdown=max_slowdown,
        warmup_steps=20,
        settle_steps=5,
        profile_steps=20,
        min_window_seconds=window_seconds,
    )
    candidates = candidate_power_limits(low, high, default, settings.limit_step_watts)
    # Enough time to profile every limit (windows plus settling) with room to train after.
    seconds = max(minutes * 60, 1.5 * len(candidates) * (window_seconds + 1) + 30)
    print(
        f"{gpu.name} {gpu.uuid}: limits {low:.0f}-{high:.0f} W (default {default:.0f} W), "
        f"{len(candidates)} candidates, {window_seconds:g} s each; training "
        f"{seconds / 60:.1f} min: {workload.description}",
        file=out,
    )
    meters: list[Meter] = [NvmlEnergyMeter(gpu, clock), CpuModelMeter()]
    engine = LeptonEngine(meters=meters, gpus=[gpu], clock=clock, output=out)
    report = engine.optimize(
        workload.step,
        _steps(engine, clock, seconds),
        settings=settings,
        synchronize=workload.synchronize,
        phase="train",
    )
    engine.report(output)
    engine.close()
    if not report.tuned:
        print(f"gpucheck: no limit was tuned: {report.reason}", file=err)
        return EXIT_NOT_TUNED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lepton.sdk.gpucheck", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--minutes", type=float, default=4.0, help="training time (default 4)")
    parser.add_argument("--max-slowdown", type=float, default=0.05, help="default 0.05 (5 %%)")
    parser.add_argument(
        "--window-seconds", type=float, default=8.0, help="measured seconds per limit (default 8)"
    )
    parser.add_argument("--gpu-index", type=int, default=0, help="NVML index of the GPU to tune")
    parser.add_argument("--output", type=Path, help="save the phases and measurements as JSON")
    args = parser.parse_args(argv)
    return run_check(
        minutes=args.minutes,
        max_slowdown=args.max_slowdown,
        window_seconds=args.window_seconds,
        gpu_index=args.gpu_index,
        output=args.output,
    )


if __name__ == "__main__":
    sys.exit(main())
