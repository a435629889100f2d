"""The public data Lepton ships: the Alibaba openb trace and the measured GPU power sweeps.

Files live beside this module (see ``README.md`` here for each file's source, licence and
columns) and are found through :mod:`importlib.resources`, so that a wheel, an image and a
clone all read the same copies. ``$LEPTON_DATA_DIR`` points every lookup at another folder of
the same layout (``traces/``, ``gpu-power/``), for example a newer copy of the trace.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DATA_DIR_ENV = "LEPTON_DATA_DIR"


def data_dir() -> Path:
    """The folder holding ``traces/`` and ``gpu-power/``: ``$LEPTON_DATA_DIR`` or the package's."""
    if env := os.environ.get(DATA_DIR_ENV):
        return Path(env)
    return Path(str(resources.files(__name__)))


def data_file(relative: str) -> Path:
    """A shipped data file by its path under the data folder, e.g. ``traces/openb_….csv``."""
    return data_dir() / relative
