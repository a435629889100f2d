"""The child Job of a LeptonJob and its energy estimate, built without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from lepton.api.jobspec import (
    build_job,
    estimate_energy,
    estimated_consumption_watt_hours,
)
from lepton.api.v1alpha1 import GPU_MODELS, LeptonJobSpec
from lepton.core.hints import hints_from_pod_metadata
from lepton.core.names import LABEL_BUDGET_NAME, LABEL_JOB_NAME, LABEL_JOB_UID
from lepton.core.profiles import is_known
from tests.support import builders


def lepton_job(**spec: Any) -> dict[str, Any]:
    """A two-replica, four-GPU training job, built by the one LeptonJob builder."""
    return builders.lepton_job(
        "train-1",
        budget="team-a",
        seconds=7200,
        namespace="ml",
        uid="u-1",
        **{
            "replicas": 2,
            "gpusPerReplica": 4,
            "gpuModels": ["A40", "A100"],
            "template": {"spec": {"containers": [{"name": "train", "image": "busybox"}]}},
            **spec,
        },
    )


def test_every_api_gpu_model_has_a_profile() -> None:
    assert all(is_known(model) for model in GPU_MODELS)


def test_job_is_created_suspended_and_owned_by_its_lepton_job() -> None:
    job = build_job(lepton_job())
    assert job["spec"]["suspend"] is True
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 2
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["kind"] == "LeptonJob" and owner["uid"] == "u-1" and owner["controller"]


def test_pods_carry_scheduler_gpus_affinity_labels_and_hints() -> None:
    pod = build_job(lepton_job(), scheduler_name="lepton-scheduler")["spec"]["template"]
    spec = pod["spec"]
    assert spec["schedulerName"] == "lepton-scheduler"
    assert spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    (expression,) = terms[0]["matchExpressions"]
    assert expression["key"] == "nvidia.com/gpu.product"
    assert "NVIDIA-A40" in expression["values"]
    assert any(v.startswith("NVIDIA-A100") for v in expression["values"])
    labels = pod["metadata"]["labels"]
    assert labels[LABEL_JOB_NAME] == "train-1" and labels[LABEL_JOB_UID] == "u-1"
    assert labels[LABEL_BUDGET_NAME] == "team-a"
    hints = hints_from_pod_metadata(labels, pod["metadata"]["annotations"])
    assert hints is not None
    assert hints.gpu_models == ("A40", "A100") and hints.replicas == 2
    assert hints.work_reference_gpu_hours == pytest.approx(2.0)


def test_existing_node_affinity_terms_each_get_the_gpu_constraint() -> None:
    template = {
        "spec": {
            "containers": [{"name": "c"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["a"]}
                                ]
                            },
                            {
                                "matchExpressions": [
                                    {"key": "zone", "operator": "In", "values": ["b"]}
                                ]
                            },
                        ]
                    }
                }
            },
        }
    }
    spec = build_job(lepton_job(template=template))["spec"]["template"]["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert [len(t["matchExpressions"]) for t in terms] == [2, 2]


def test_a_template_without_containers_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"spec\.template\.spec\.containers"):
        build_job(lepton_job(template={"spec": {}}))


def test_estimate_reserves_for_the_most_energy_hungry_acceptable_model() -> None:
    def estimate_for(models: list[str]) -> Any:
        return estimate_energy(LeptonJobSpec.model_validate(lepton_job(gpuModels=models)["spec"]))

    singles = {m: estimate_for([m]).watt_hours for m in ("A40", "A100", "T4")}
    combined = estimate_for(["A40", "A100", "T4"])
    assert combined.gpus == 8
    assert combined.watt_hours == max(singles.values()) > 0
    assert singles[combined.gpu_model] == combined.watt_hours


def test_estimate_with_no_model_list_considers_every_model() -> None:
    any_model = estimate_energy(LeptonJobSpec.model_validate(lepton_job(gpuModels=[])["spec"]))
    only_a40 = estimate_energy(LeptonJobSpec.model_validate(lepton_job(gpuModels=["A40"])["spec"]))
    assert any_model.watt_hours >= only_a40.watt_hours


def test_estimated_consumption_grows_with_run_time_at_average_power() -> None:
    estimate = estimate_energy(LeptonJobSpec.model_validate(lepton_job()["spec"]))
    half = estimated_consumption_watt_hours(estimate, estimate.duration_seconds / 2)
    assert half == pytest.approx(estimate.watt_hours / 2)
    assert estimated_consumption_watt_hours(estimate, 2 * estimate.duration_seconds) == (
        pytest.approx(2 * estimate.watt_hours)
    )
