"""The Lepton SDK: phase metering and power-limit optimisation inside a training job.

A data scientist writes ``from lepton import LeptonEngine``, marks phases with
``with engine.phase("train"):`` and may let ``engine.optimize(step, batches)``
pick a GPU power limit that trains with less energy. Framework adapters (Keras,
PyTorch) live in ``lepton.sdk.adapters`` and import their framework only when
used.
"""

from lepton.sdk.engine import LeptonEngine
from lepton.sdk.meters import MeterSource
from lepton.sdk.optimizer import OptimizerConfig, OptimizeReport

__all__ = ["LeptonEngine", "MeterSource", "OptimizeReport", "OptimizerConfig"]
