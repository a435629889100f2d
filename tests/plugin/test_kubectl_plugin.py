"""`kubectl lepton status | explain | top`, found by kubectl on PATH, against the full stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lepton.api.jobspec import estimate_energy
from lepton.api.v1alpha1 import LeptonJobSpec
from lepton.cluster.stack import LeptonStack
from lepton.cluster.tools import tool_path
from tests.support import wait_for

pytestmark = pytest.mark.e2e

# Measured twice here: 324.3 Wh booked where the model gives 359.8 Wh (A100), 10 % short, both
# before and after settling waited for a sample past the end; the cause is not found (the start
# of the run, sampled every 2 s of ~40 s, is a candidate). Active-only metering is 19-42 % short.
PLUGIN_METER_TOLERANCE = 0.15


def kubectl_lepton(stack: LeptonStack, *args: str) -> subprocess.CompletedProcess[str]:
    # kubectl finds plugins on PATH: the virtualenv's bin holds kubectl-lepton.
    env = {
        **stack.cluster.env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{stack.cluster.env()['PATH']}",
        "LEPTON_PROMETHEUS_URL": stack.prometheus_url,
    }
    return subprocess.run(
        [str(tool_path("kubectl")), "lepton", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _job(name: str, work_seconds: int, models: list[str]) -> dict[str, object]:
    return {
        "apiVersion": "lepton.dev/v1alpha1",
        "kind": "LeptonJob",
        "metadata": {"name": name},
        "spec": {
            "budgetName": "team",
            "gpuModels": models,
            "gpusPerReplica": 1,
            "energyPolicy": "Efficiency",
            "work": {"referenceGpuSeconds": work_seconds},
            "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
        },
    }


def test_plugin_shows_budgets_waiting_jobs_placements_and_power(lepton_stack: LeptonStack) -> None:
    cluster = lepton_stack.cluster
    ns = f"plugin-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    budget = {
        "apiVersion": "lepton.dev/v1alpha1",
        "kind": "EnergyBudget",
        "metadata": {"name": "team"},
        "spec": {"limitWattHours": 1000, "periodSeconds": 86400, "whenExhausted": "Queue"},
    }
    # 4 reference GPU-hours: ~40 s of wall time on the stack's clock; far beyond the budget: 100 h.
    docs = [
        budget,
        _job("runs", 4 * 3600, ["A40", "A100", "T4", "L4"]),
        _job("waits", 100 * 3600, ["A40"]),
    ]
    for doc in docs:
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))

    def running_pod() -> str:
        out = cluster.kubectl(
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            "lepton.dev/job-name=runs",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ).stdout.split()
        return out[0] if out else ""

    wait_for(lambda: bool(running_pod()), 90, "the admitted job's pod to run")
    pod = running_pod()
    node = cluster.kubectl("get", "pod", pod, "-n", ns, "-o", "jsonpath={.spec.nodeName}").stdout

    # Prometheus scrapes the exporter every 2 s: wait for its first samples of this fleet.
    wait_for(
        lambda: "estimated by the model" in kubectl_lepton(lepton_stack, "status", "-n", ns).stdout,
        30,
        "Prometheus to have the exporter's power",
    )
    status = kubectl_lepton(lepton_stack, "status", "-n", ns)
    assert status.returncode == 0, status.stderr
    assert "team" in status.stdout and "1000" in status.stdout
    waits_line = next(
        line for line in status.stdout.splitlines() if line.lstrip(f"{ns} ").startswith("waits")
    )
    assert "WaitingForBudget" in waits_line or "ExceedsBudget" in waits_line
    assert "Wh" in waits_line, "the waiting message names the numbers"
    assert "CLUSTER GPU POWER NOW" in status.stdout and "estimated by the model" in status.stdout

    explain = kubectl_lepton(lepton_stack, "explain", pod, "-n", ns)
    assert explain.returncode == 0, explain.stderr + explain.stdout
    assert f"node:      {node}" in explain.stdout
    assert "score" in explain.stdout and "Wh" in explain.stdout
    assert node in explain.stdout.split("scoring", 1)[1], "the chosen node is among the scored ones"

    def top_shows_the_node() -> bool:
        out = kubectl_lepton(lepton_stack, "top").stdout
        return node in out and ns in out

    wait_for(top_shows_the_node, 30, f"`kubectl lepton top` to show {node} and {ns}")
    top = kubectl_lepton(lepton_stack, "top")
    assert "GPU MODEL" in top.stdout and "estimated by the model backend" in top.stdout
    ns_watts = next(line.split()[-1] for line in top.stdout.splitlines() if line.startswith(ns))
    assert float(ns_watts) > 0

    def finished() -> dict[str, object]:
        lj = json.loads(cluster.kubectl("get", "lj", "runs", "-n", ns, "-o", "json").stdout)
        return dict(lj.get("status", {}))

    wait_for(lambda: finished().get("state") == "Finished", 120, "the job to finish")
    final = finished()
    # The kwok fleet's power comes from the exporter's model backend: never called measured.
    assert final["consumptionSource"] == "Estimated"
    consumed = float(str(final["consumedWattHours"]))
    assert 0 < consumed <= float(str(final["estimatedWattHours"]))
    # Status says where the job ran: pod → node → the GPU model it got.
    placements = final["placements"]
    assert isinstance(placements, list) and placements[0]["pod"] == pod
    assert placements[0]["node"] == node
    node_model = cluster.kubectl(
        "get", "node", node, "-o", "jsonpath={.metadata.labels.lepton\\.dev/gpu-model}"
    ).stdout
    assert final["gpuModel"] == placements[0]["gpuModel"] == node_model
    # One basis for reserved and used: what the meter (here the exporter's model backend)
    # charged is what the estimate gives for the same work on the GPU the job got, not merely
    # below the estimate for the hungriest model it accepts (active-only metering passed that).
    spec = LeptonJobSpec.model_validate(_job("runs", 4 * 3600, [node_model])["spec"])
    on_its_gpu = estimate_energy(spec).watt_hours
    assert consumed == pytest.approx(on_its_gpu, rel=PLUGIN_METER_TOLERANCE), (
        f"consumed {consumed:.3f} Wh, the model gives {on_its_gpu:.3f} Wh on {node_model}"
    )

    missing = kubectl_lepton(lepton_stack, "explain", "nope", "-n", ns)
    assert missing.returncode != 0 and "not found" in missing.stderr
