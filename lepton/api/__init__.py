"""Lepton's Kubernetes API: the pydantic models from which the CRDs in ``crds/`` are generated.

The models are the single source of the schema: ``python -m lepton.api.crdgen`` writes the
CRDs into this package's ``crds/`` folder (so that a wheel carries them) and a test fails
when the checked-in copies drift from them. :func:`crd_dir` finds them through
:mod:`importlib.resources`, in a clone, a wheel and the image alike.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def crd_dir() -> Path:
    """The folder of the generated CRD YAML files shipped with the package."""
    return Path(str(resources.files(__name__).joinpath("crds")))
