"""The Keras and PyTorch adapters, over duck-typed models (neither framework is installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lepton.hw.fake_nvml import A40_DEFAULT_LIMIT_WATTS, FakeNvml, curve_fleet, median_a40_curve
from lepton.sdk import LeptonEngine
from lepton.sdk.adapters import keras_fit, torch_step, torch_synchronize


class FakeKerasModel:
    """Calls callbacks the way ``keras.Model.fit`` does, one fake GPU step per batch."""

    def __init__(self, fake: FakeNvml, fail_at: int | None = None) -> None:
        self.fake, self.fail_at = fake, fail_at

    def fit(self, x: Any, *, epochs: int, steps_per_epoch: int, callbacks: list[Any]) -> str:
        for callback in callbacks:
            callback.on_train_begin()
        for epoch in range(epochs):
            for batch in range(steps_per_epoch):
                for callback in callbacks:
                    callback.on_train_batch_begin(batch)
                if epoch * steps_per_epoch + batch == self.fail_at:
                    raise RuntimeError("out of memory")
                self.fake.run_step()
                for callback in callbacks:
                    callback.on_train_batch_end(batch)
        for callback in callbacks:
            callback.on_train_end()
        return "history"


class CallbackBase:
    """Stands in for keras.callbacks.Callback."""


def engine_over(fake: FakeNvml) -> LeptonEngine:
    return LeptonEngine(nvml=fake, clock=fake.clock, powercap_root=Path("/nonexistent"))


def test_keras_fit_tunes_the_limit_through_its_callback(shipped_data: Path) -> None:
    curve = median_a40_curve(shipped_data)
    fake = curve_fleet(curve)
    engine = engine_over(fake)
    user_callback = CallbackBaseRecorder()
    history, report = keras_fit(
        engine,
        FakeKerasModel(fake),
        "x",
        epochs=4,
        steps_per_epoch=500,
        callbacks=[user_callback],
        callback_base=CallbackBase,
    )
    assert history == "history"
    assert report.tuned, report.reason
    assert report.steps == 2000
    assert len(report.measurements) == len(curve.limits_watts)
    assert report.chosen_power_limit_watts < A40_DEFAULT_LIMIT_WATTS
    assert user_callback.batches == 2000  # the user's callbacks still run
    assert [r.name for r in engine.records] == ["train"]
    assert fake.gpus[0].limit_watts == A40_DEFAULT_LIMIT_WATTS


class CallbackBaseRecorder:
    def __init__(self) -> None:
        self.batches = 0

    def on_train_begin(self) -> None: ...

    def on_train_batch_begin(self, batch: int) -> None: ...

    def on_train_batch_end(self, batch: int) -> None:
        self.batches += 1

    def on_train_end(self) -> None: ...


def test_keras_fit_that_raises_still_restores_the_limit(shipped_data: Path) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data))
    engine = engine_over(fake)
    with pytest.raises(RuntimeError, match="out of memory"):
        keras_fit(
            engine,
            FakeKerasModel(fake, fail_at=400),
            "x",
            epochs=4,
            steps_per_epoch=500,
            callback_base=CallbackBase,
        )
    assert fake.gpus[0].limit_watts == A40_DEFAULT_LIMIT_WATTS
    assert len(fake.gpus[0].limit_history_watts) > 1  # it was profiling when it failed
    assert engine.optimize_reports and engine.records[0].name == "train"


def test_keras_adapter_without_keras_says_what_to_install(shipped_data: Path) -> None:
    fake = curve_fleet(median_a40_curve(shipped_data))
    with pytest.raises(ImportError, match="pip install keras"):
        keras_fit(engine_over(fake), FakeKerasModel(fake), epochs=1, steps_per_epoch=1)


class Tensor:
    """Just enough of a tensor: records moves and backward calls."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def to(self, device: str, non_blocking: bool = False) -> Tensor:
        self.log.append(f"{self.name}->{device}")
        return self

    def backward(self) -> None:
        self.log.append("backward")


def test_torch_step_runs_forward_backward_and_update_in_order() -> None:
    log: list[str] = []

    class Optimizer:
        def zero_grad(self, set_to_none: bool = False) -> None:
            log.append(f"zero_grad(set_to_none={set_to_none})")

        def step(self) -> None:
            log.append("update")

    def model(inputs: Tensor) -> str:
        log.append(f"forward({inputs.name})")
        return "outputs"

    def loss_fn(outputs: str, targets: Tensor) -> Tensor:
        log.append(f"loss({outputs},{targets.name})")
        return Tensor("loss", log)

    step = torch_step(model, Optimizer(), loss_fn, device="cuda:0")
    loss = step((Tensor("x", log), Tensor("y", log)))
    assert isinstance(loss, Tensor) and loss.name == "loss"
    assert log == [
        "x->cuda:0",
        "y->cuda:0",
        "zero_grad(set_to_none=True)",
        "forward(x)",
        "loss(outputs,y)",
        "backward",
        "update",
    ]


def test_torch_synchronize_is_offered_only_with_a_cuda_pytorch() -> None:
    try:
        import torch  # type: ignore[import-not-found]

        has_cuda = bool(torch.cuda.is_available())
    except ImportError:  # the usual case here: PyTorch is not a dependency
        has_cuda = False
    assert (torch_synchronize() is not None) == has_cuda
