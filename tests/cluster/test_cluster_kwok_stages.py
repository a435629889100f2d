"""The local cluster's kwok stages behave as a kubelet does where Lepton reads the pod."""

from __future__ import annotations

import json
from datetime import datetime

from lepton.cluster.kwok import JOB_POD_RUN_SECONDS
from lepton.cluster.local import LocalCluster
from tests.support.builders import apply
from tests.support.wait import wait_for


def _container_state(cluster: LocalCluster, namespace: str, state: str) -> dict[str, str] | None:
    """The Job's container in ``state`` (running, terminated), or None while it is not."""
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", "job-name=ran", "-o", "json").stdout
    )["items"]
    statuses = [cs for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or []]
    found: dict[str, str] | None = statuses[0]["state"].get(state) if statuses else None
    return found


def test_a_completed_pod_keeps_the_start_its_container_had_while_it_ran(
    cluster: LocalCluster, namespace: str
) -> None:
    """The operator charges a job for its pods' run intervals, and a pod that has ended gives
    its interval by its terminated container's startedAt and finishedAt. kwok's own stages
    stamped both with the completion time, so every ended pod looked as if it had run for no
    time: a job whose running status a crashed pass never wrote was booked for what the pass
    saw but replayed as 0 Wh (CI, leader-kill test). This failed before the fix (0 s)."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "ran"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}],
                }
            }
        },
    }
    apply(cluster, namespace, job)
    running = wait_for(
        lambda: _container_state(cluster, namespace, "running"),
        60,
        "the Job's pod to run",
    )
    terminated = wait_for(
        lambda: _container_state(cluster, namespace, "terminated"),
        60,
        "the Job's pod to complete",
    )
    assert running is not None and terminated is not None
    assert terminated["startedAt"] == running["startedAt"]
    ran = datetime.fromisoformat(terminated["finishedAt"]) - datetime.fromisoformat(
        terminated["startedAt"]
    )
    # kwok completes a Job pod JOB_POD_RUN_SECONDS after it runs; stamps are whole seconds.
    assert JOB_POD_RUN_SECONDS - 1 <= ran.total_seconds() <= JOB_POD_RUN_SECONDS + 5
