"""End to end on the CPU: the example training job, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "sdk" / "train_digits_cpu.py"


def test_cpu_training_example_prints_and_saves_its_phase_table(tmp_path: Path) -> None:
    output = tmp_path / "phases.json"
    env = {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "POD_NAMESPACE")}
    env["LEPTON_POWERCAP_ROOT"] = str(tmp_path / "no-powercap")  # same result on every host
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "3", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stdout = result.stdout

    # The model trained: the digits are easy, anything that learned beats 80 %.
    accuracy = float(stdout.split("Test accuracy: ")[1].split()[0])
    assert accuracy > 0.8

    # The table: a header, the three phases in order, a total, all labelled estimated.
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Phase"))
    assert "CPU (Wh)" in lines[header] and "Total (Wh)" in lines[header]
    rows = [line.split() for line in lines[header + 2 : header + 5]]
    assert [row[0] for row in rows] == ["init", "train", "eval"]
    assert all(row[-1] == "estimated" for row in rows)
    assert "no GPU power limit can be set here" in stdout
    assert "Trained" in stdout and "unchanged" in stdout

    document = json.loads(output.read_text())
    phases = {p["name"]: p for p in document["phases"]}
    assert list(phases) == ["init", "train", "eval"]
    assert phases["train"]["energyWattHours"] > 0
    assert phases["train"]["durationSeconds"] > 0
    assert document["meters"][0]["source"] == "model"
    assert document["powerLimit"]["tuned"] is False
    total = sum(p["energyWattHours"] for p in phases.values())
    assert abs(document["totalEnergyWattHours"] - total) < 1e-12
