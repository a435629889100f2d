"""`import operator` is the standard library's, even from the repo root where `operator/` lives."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


@pytest.mark.parametrize("flags", [[], ["-S"], ["-I"]], ids=["plain", "no-site", "isolated"])
def test_import_operator_from_repo_root_is_the_standard_library(flags: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, *flags, "-c", "import operator; print(operator.__file__)"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(out).resolve() == STDLIB / "operator.py"


def test_the_operator_component_imports_under_its_own_name() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import lepton_operator, operator; print(operator.itemgetter)"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "itemgetter" in out
