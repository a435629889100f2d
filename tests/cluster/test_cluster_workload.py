"""The local cluster's work simulator: a pod runs as long as its work takes on its GPU."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lepton.cluster.workload import RunningPod, due_for_release, pod_run_seconds
from lepton.core.energy import job_duration_seconds
from lepton.core.hints import EnergyPolicy, JobHints, hints_to_annotations
from lepton.core.names import LABEL_JOB_NAME

START = datetime(2026, 1, 1, tzinfo=UTC)


def _pod(model: str, hints: JobHints | None, name: str = "p") -> RunningPod:
    labels = {LABEL_JOB_NAME: hints.job_name} if hints else {}
    annotations = hints_to_annotations(hints) if hints else {}
    return RunningPod("ns", name, model, START, labels, annotations)


def test_a_pod_runs_its_share_of_the_work_at_its_gpus_speed() -> None:
    hints = JobHints(
        "train", EnergyPolicy.BALANCED, 8.0, gpus_per_replica=2, replicas=2, power_cap="None"
    )
    seconds = pod_run_seconds(_pod("A40", hints), time_compression=1.0)
    assert seconds == pytest.approx(job_duration_seconds("A40", 4.0, 2, None))
    assert seconds == pytest.approx(4.0 * 3600 / 2, rel=0.01), "the A40 is the reference GPU"


def test_faster_gpus_finish_sooner_and_compression_divides_time() -> None:
    hints = JobHints("train", work_reference_gpu_hours=1.0, power_cap="None")
    a40 = pod_run_seconds(_pod("A40", hints), 1.0)
    a100 = pod_run_seconds(_pod("NVIDIA-A100-SXM4-80GB", hints), 1.0)
    t4 = pod_run_seconds(_pod("T4", hints), 1.0)
    assert a100 < a40 < t4
    assert pod_run_seconds(_pod("A40", hints), 360.0) == pytest.approx(a40 / 360.0)


def test_pods_without_hints_are_released_at_once() -> None:
    assert pod_run_seconds(_pod("A40", None), 1.0) == 0.0


def test_only_pods_whose_work_is_done_are_due() -> None:
    hints = JobHints("train", work_reference_gpu_hours=1.0, power_cap="None")
    fast, slow = _pod("A100", hints, "fast"), _pod("T4", hints, "slow")
    needed = pod_run_seconds(fast, 60.0)
    now = START + timedelta(seconds=needed + 0.1)
    assert [p.name for p in due_for_release([fast, slow], now, 60.0)] == ["fast"]
    later = START + timedelta(seconds=pod_run_seconds(slow, 60.0) + 0.1)
    assert {p.name for p in due_for_release([fast, slow], later, 60.0)} == {"fast", "slow"}
