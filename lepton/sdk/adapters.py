"""Thin adapters from Keras and PyTorch training to ``LeptonEngine.optimize``.

The optimizer only needs a hook before and after every training step. Keras
owns its loop, so it gets a callback that drives an ``OptimizeSession``;
PyTorch users write their loop, so they get a ready ``step(batch)`` and the
``synchronize`` that makes step times exact. Neither framework is a dependency:
each is imported only when its adapter is called, and the hooks are plain
classes tested without either framework installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from lepton.sdk.engine import LeptonEngine, OptimizeSession
from lepton.sdk.optimizer import OptimizerConfig, OptimizeReport


class KerasOptimizeHooks:
    """The Keras callback methods that drive an ``OptimizeSession`` during ``fit``."""

    def __init__(
        self,
        engine: LeptonEngine,
        settings: OptimizerConfig | None = None,
        phase: str = "train",
    ) -> None:
        super().__init__()  # the Keras Callback base, when mixed with it
        self.session = OptimizeSession(engine, settings, synchronize=None, phase=phase)

    @property
    def report(self) -> OptimizeReport | None:
        return self.session.report

    def on_train_begin(self, logs: Any = None) -> None:
        self.session.begin()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.session.step_begin()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.session.step_end()

    def on_train_end(self, logs: Any = None) -> None:
        self.session.end()


def _keras_callback_base() -> type:
    for module in ("keras", "tensorflow.keras"):
        try:
            callbacks: Any = importlib.import_module(f"{module}.callbacks")
        except ImportError:
            continue
        base: type = callbacks.Callback
        return base
    raise ImportError("Keras is not installed: pip install keras (or tensorflow)")


def keras_callback(
    engine: LeptonEngine,
    settings: OptimizerConfig | None = None,
    phase: str = "train",
    base: type | None = None,
) -> KerasOptimizeHooks:
    """A Keras callback that tunes the GPU power limit during ``model.fit``.

    ``base`` is the Keras ``Callback`` class, found when not given.
    """
    base = base or _keras_callback_base()
    callback_class = type("LeptonPowerLimitCallback", (KerasOptimizeHooks, base), {})
    callback: KerasOptimizeHooks = callback_class(engine, settings, phase)
    return callback


def keras_fit(
    engine: LeptonEngine,
    model: Any,
    *args: Any,
    settings: OptimizerConfig | None = None,
    phase: str = "train",
    callback_base: type | None = None,
    **kwargs: Any,
) -> tuple[Any, OptimizeReport]:
    """``model.fit(*args, **kwargs)`` under the optimizer; returns (history, report).

    If ``fit`` raises, the callback's ``on_train_end`` may never run, so the
    session is ended here too: the GPUs' limits are always restored.
    """
    callback = keras_callback(engine, settings, phase, base=callback_base)
    callbacks: Sequence[Any] = kwargs.pop("callbacks", None) or []
    try:
        history = model.fit(*args, callbacks=[*callbacks, callback], **kwargs)
    finally:
        if callback.session.active:
            callback.session.end()
    assert callback.report is not None
    return history, callback.report


def torch_step(
    model: Any,
    optimizer: Any,
    loss_fn: Callable[[Any, Any], Any],
    device: Any = None,
) -> Callable[[Any], Any]:
    """A ``step((inputs, targets))`` for ``engine.optimize``: forward, backward, update.

    Tensors are moved to ``device`` when one is given (``non_blocking`` so that
    pinned-memory loaders overlap the copy). Returns the loss tensor; reading
    its value each step would synchronise the GPU, so that is left to the caller.
    """

    def step(batch: Any) -> Any:
        inputs, targets = batch
        if device is not None:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss

    return step


def torch_synchronize() -> Callable[[], object] | None:
    """``torch.cuda.synchronize`` when PyTorch sees a GPU, else None (nothing to wait for)."""
    try:
        torch: Any = importlib.import_module("torch")
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    synchronize: Callable[[], object] = torch.cuda.synchronize
    return synchronize
