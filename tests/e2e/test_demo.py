"""`lepton demo` (what `make demo` runs) completes on its own and writes an honest report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_the_whole_story_and_reports(tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lepton.cli",
            "demo",
            "--no-wait",
            "--state-dir",
            str(tmp_path / "state"),
            "--report-dir",
            str(report_dir),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    # The story: the big job waited, the limit was raised, everything finished.
    assert "Waiting" in out and "raising budget team-a" in out
    assert "the same 4 jobs through the default scheduler" in out
    summary = json.loads((report_dir / "summary.json").read_text())
    lepton_jobs = {p["job"] for p in summary["lepton_pods"]}
    default_jobs = {p["job"] for p in summary["default_scheduler_pods"]}
    assert lepton_jobs == default_jobs == {"train-a40", "finetune", "batch-inference", "pretrain"}
    assert summary["lepton"]["pods"] == summary["default_scheduler"]["pods"]
    # Lepton honoured each job's GPU models and spread the inference replicas across zones
    # (the default scheduler's choice among tied nodes is random, so the totals are reported
    # in the summary, not asserted).
    accepted = {
        "train-a40": {"A40"},
        "finetune": {"A40", "A100"},
        "batch-inference": {"T4", "L4"},
        "pretrain": {"H100", "A100"},
    }
    for pod in summary["lepton_pods"]:
        assert pod["gpu_model"] in accepted[pod["job"]], pod
    zone = {
        "a40-0": "a",
        "a40-1": "a",
        "l4-0": "a",
        "l4-1": "a",
        "a100-0": "b",
        "a100-1": "b",
        "a40-b-0": "b",
        "t4-0": "c",
        "t4-1": "c",
        "a40-c-0": "c",
    }
    inference = [p["node"] for p in summary["lepton_pods"] if p["job"] == "batch-inference"]
    assert len({zone[n] for n in inference}) == 2, inference
    # The service Deployment went through Lepton as a service, onto the small efficient GPUs,
    # and each placement says why; the default scheduler placed the same replicas by cpu and
    # memory alone, and can only draw as much or more at the same load.
    services = summary["services"]
    assert len(services["lepton_pods"]) == len(services["default_scheduler_pods"]) == 3
    for pod in services["lepton_pods"]:
        assert pod["gpu_model"] in {"T4", "L4"}, pod
        assert "Service at 10 % of an A40" in pod["why"] and "held idle" in pod["why"], pod
    assert services["lepton_watts_default_limit"] <= services["default_scheduler_watts"]
    # Power caps only ever lower the energy of the same placements.
    assert summary["saving_with_power_caps"] >= summary["saving_from_placement"]
    page = (report_dir / "report.html").read_text()
    assert "estimate from Lepton's energy model" in page
    assert "Model estimates, not measurements." in page
    assert "Nodes scaled in when empty" in page and "node-hours" in page
    assert "Per workload: where each scheduler put it, and why" in page
    assert "The service: watts at its load" in page
    assert "Service (energy model, watts at its load)" in out
    assert (report_dir / "energy.png").stat().st_size > 1000
    assert "Report:" in out and "[demo] stopping every process" in out
    # Nothing is left running: the state directory is gone.
    assert not (tmp_path / "state").exists()


def test_node_hours_count_overlapping_pods_once() -> None:
    from lepton.demo import PodRun, node_on_hours

    def run(node: str, start: float, end: float) -> PodRun:
        return PodRun("j", f"p{start}", node, "A40", 1, end - start, 1.0, 1.0, start, end, 100.0)

    hours = node_on_hours([run("a", 0, 2), run("a", 1, 3), run("a", 5, 6), run("b", 0, 1)])
    assert hours == {"a": 4.0, "b": 1.0}
