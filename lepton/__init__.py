"""Lepton: energy-aware scheduling for Kubernetes GPU clusters.

The top-level package is the shared core (``lepton.core``: pure decisions),
the local control plane used by tests and the demo (``lepton.cluster``) and
the ``lepton`` command line (``lepton.cli``). The components live beside it in
the design card's folders: ``operator/lepton_operator``,
``scheduler/lepton_scheduler`` and ``exporter/lepton_exporter``.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # the real type for type checkers; loaded lazily below at run time
    from lepton.sdk import LeptonEngine as LeptonEngine


def __getattr__(name: str) -> object:
    # `from lepton import LeptonEngine` loads the SDK only when asked for, so that
    # `import lepton` (the CLI, the operator) stays cheap.
    if name == "LeptonEngine":
        from lepton.sdk import LeptonEngine as LeptonEngine

        return LeptonEngine
    raise AttributeError(f"module 'lepton' has no attribute {name!r}")
