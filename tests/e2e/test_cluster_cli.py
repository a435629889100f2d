"""`lepton cluster up / status / kubeconfig / down`, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lepton.cluster.processes import pid_running

pytestmark = pytest.mark.e2e

LEPTON = [sys.executable, "-m", "lepton.cli"]


def lepton(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*LEPTON, *args], capture_output=True, text=True, timeout=180, check=False
    )
    if check:
        assert result.returncode == 0, f"lepton {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_cluster_cli_lifecycle_with_a_fleet_file(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "nodeGroups:\n"
        "  - {name: h100, count: 2, gpuModel: H100, gpusPerNode: 8, zone: east}\n"
        "  - {name: l4, count: 1, gpuModel: L4, gpusPerNode: 2, zone: west}\n"
    )
    up = lepton("cluster", "up", "--no-build", "--state-dir", state, "--fleet", str(fleet))
    kubeconfig = up.stdout.strip().splitlines()[-1]
    assert Path(kubeconfig).is_file()
    assert "3 nodes Ready" in up.stderr
    try:
        assert lepton("cluster", "kubeconfig", "--state-dir", state).stdout.strip() == kubeconfig
        status = json.loads(lepton("cluster", "status", "--json", "--state-dir", state).stdout)
        assert all(row["healthy"] for row in status.values()), status
        table = lepton("cluster", "status", "--state-dir", state).stdout
        assert "kube-apiserver" in table and "MiB" in table
        pids = [row["pid"] for row in status.values()]
        assert all(pid_running(pid) for pid in pids)
        again = lepton("cluster", "up", "--no-build", "--state-dir", state, check=False)
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        down = lepton("cluster", "down", "--state-dir", state)
    assert f"stopped {len(pids)} processes" in down.stdout
    assert not [pid for pid in pids if pid_running(pid)]
    gone = lepton("cluster", "status", "--state-dir", state, check=False)
    assert gone.returncode != 0 and "lepton cluster up" in gone.stderr
