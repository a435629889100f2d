"""What the tests share: one way to wait, and the builders of the objects they create.

Import it as ``tests.support`` (pytest puts the repository root on ``sys.path``, see
``pythonpath`` in pyproject.toml). The one fake NVML is :mod:`lepton.hw.fake_nvml`, where
the demo and ``--backend fake`` reach it too.
"""

from __future__ import annotations

from tests.support.wait import wait_for

__all__ = ["wait_for"]
