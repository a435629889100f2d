"""The README's manifests and its `kubectl get` output are true on a real control plane."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from lepton.cluster.stack import LeptonStack
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def lepton_manifests() -> list[dict[str, object]]:
    docs = [yaml.safe_load(block) for block in readme_blocks("yaml")]
    return [d for d in docs if isinstance(d, dict) and d.get("apiVersion") == "lepton.dev/v1alpha1"]


def test_readme_has_a_budget_and_a_job() -> None:
    kinds = sorted(str(d["kind"]) for d in lepton_manifests())
    assert kinds == ["EnergyBudget", "LeptonJob"]


def test_readme_manifests_are_accepted_admitted_and_run(lepton_stack: LeptonStack) -> None:
    cluster = lepton_stack.cluster
    ns = f"readme-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    for doc in lepton_manifests():
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
    job = next(d for d in lepton_manifests() if d["kind"] == "LeptonJob")
    name = str(job["metadata"]["name"])  # type: ignore[index]

    def finished() -> dict[str, Any] | None:
        lj: dict[str, Any] = json.loads(
            cluster.kubectl("get", "lj", name, "-n", ns, "-o", "json").stdout
        )
        return lj if lj.get("status", {}).get("state") == "Finished" else None

    lj = wait_for(finished, 120, f"the README's job {name} to finish", interval=1.0)
    state = lj["status"]["state"]
    assert state == "Finished", f"the README's job ended in state {state}"
    assert lj["status"]["consumedWattHours"] > 0

    # The README's `kubectl get` headers are what kubectl really prints.
    console = next(b for b in readme_blocks("console") if "kubectl get leptonjobs" in b)
    readme_headers = [line.split() for line in console.splitlines() if line.startswith("NAME")]
    for resource, expected in zip(("leptonjobs", "energybudgets"), readme_headers, strict=True):
        real = cluster.kubectl("get", resource, "-n", ns).stdout.splitlines()[0].split()
        assert real == expected, f"README shows {expected} for {resource}, kubectl prints {real}"


def test_every_relative_link_in_the_readme_exists() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)\)", README.read_text())
    local = [t for t in targets if "://" not in t]
    assert local, "the README links the docs"
    missing = [t for t in local if not (README.parent / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
