"""What the Helm chart carries stays in step with its sources (no helm needed: the fast tier)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lepton.api import crd_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "lepton"


def test_chart_crds_and_dashboards_match_their_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "deploy_assets.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    crds = sorted(p.name for p in crd_dir().glob("*.yaml"))
    assert crds and crds == sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    for name in crds:
        assert (CHART / "crds" / name).read_bytes() == (crd_dir() / name).read_bytes()
