"""Fail-open on a real control plane: with the Lepton scheduler killed, pods are still scheduled.

The extender stanza is ``ignorable: true``, so kube-scheduler goes on without
it. When the Lepton scheduler comes back it counts the LeptonJob pods that were
placed while it was away (bound, recent, no ``LeptonScored`` event) in
``lepton_scheduler_pods_placed_unscored_total``.
"""

from __future__ import annotations

import re
import urllib.request

import pytest
from lepton_scheduler.app import SCHEDULER_KEY, build_app

from lepton.cluster.local import LocalCluster
from lepton.cluster.processes import free_port
from lepton.core.hints import JobHints
from lepton.kube import api_client
from tests.support import wait_for
from tests.support.builders import apply, job_pod
from tests.support.scheduler import FLEET_NODES, placed, serve

pytestmark = pytest.mark.e2e


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not served"
    return float(match.group(1))


def test_pods_are_scheduled_while_the_scheduler_is_down_and_counted_after(
    cluster: LocalCluster, namespace: str
) -> None:
    port = free_port()
    api = api_client(str(cluster.kubeconfig))
    first = build_app(kube_api=api)
    url, stop_first = serve(first, port)
    wait_for(lambda: first[SCHEDULER_KEY].synced, 60, "the Lepton scheduler's caches to sync")
    cluster.start_lepton_scheduler(url)
    try:
        stop_first()  # the Lepton scheduler is gone; its URL refuses connections
        hints = JobHints(job_name="orphan")
        apply(cluster, namespace, job_pod("orphan-0", hints))
        assert placed(cluster, namespace, ["orphan-0"])["orphan-0"] in FLEET_NODES

        second = build_app(kube_api=api_client(str(cluster.kubeconfig)))
        url_again, stop_second = serve(second, port)
        try:
            wait_for(lambda: second[SCHEDULER_KEY].synced, 60, "the restarted scheduler to sync")
            counted = _metric(url_again, "lepton_scheduler_pods_placed_unscored_total")
            assert counted >= 1
            # and it is back in charge: the next pod is scored
            apply(cluster, namespace, job_pod("orphan-1", hints))
            placed(cluster, namespace, ["orphan-1"])
            assert second[SCHEDULER_KEY].decisions.get(f"{namespace}/orphan-1") is not None
        finally:
            stop_second()
    finally:
        cluster.stop_lepton_scheduler()
