"""The local cluster's process handling, on real processes: start detached, find by PID, stop."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from lepton.cluster import components, processes
from lepton.cluster.processes import Process, cpu_seconds, pid_running, rss_bytes
from tests.support.wait import wait_for


def _spawn(tmp_path: Path, script: str) -> Process:
    return processes.spawn(
        "sleeper", ["sh", "-c", script], 0, "", tmp_path / "sleeper.log", tmp_path
    )


def test_a_spawned_process_is_found_by_pid_and_stopped(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "echo started; exec sleep 60")
    try:
        assert proc.alive() and pid_running(proc.pid)
        assert rss_bytes(proc.pid) > 0
        assert cpu_seconds(proc.pid) is not None
        wait_for(lambda: "started" in processes.log_tail(Path(proc.log_path)), 10, "its log")
    finally:
        processes.stop([proc])
    assert not proc.alive() and not pid_running(proc.pid)
    assert rss_bytes(proc.pid) == 0 and cpu_seconds(proc.pid) is None


def test_a_later_process_with_the_same_pid_is_not_taken_for_it(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "exec sleep 60")
    try:
        assert proc.start_ticks is not None
        reused = dataclasses.replace(proc, start_ticks=proc.start_ticks - 1)
        assert pid_running(reused.pid) and not reused.alive()
    finally:
        processes.stop([proc])


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_time(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "trap '' TERM; echo trapped; while :; do sleep 0.1; done")
    wait_for(lambda: "trapped" in processes.log_tail(Path(proc.log_path)), 10, "the trap")
    started = time.monotonic()
    processes.stop([proc], grace=1.0)
    assert not proc.alive()
    assert time.monotonic() - started >= 1.0


def test_a_missing_log_reads_as_no_log(tmp_path: Path) -> None:
    assert processes.log_tail(tmp_path / "none.log") == "(no log)"


def test_a_scheduler_config_keeps_its_profiles_and_gets_the_clusters_client(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    profiles = [{"schedulerName": "other"}]
    config = components.scheduler_config(
        kubeconfig, {"profiles": profiles, "clientConnection": {"qps": 1}}
    )
    assert config["profiles"] == profiles
    assert config["clientConnection"]["kubeconfig"] == str(kubeconfig)
    assert config["clientConnection"]["qps"] == components.SCHEDULER_CLIENT_QPS
    assert config["leaderElection"] == {"leaderElect": False}
    assert components.scheduler_config(kubeconfig)["kind"] == "KubeSchedulerConfiguration"
