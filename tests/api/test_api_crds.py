"""The checked-in CRDs are generated from the API models and stay structural."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from lepton.api import crdgen
from lepton.api.v1alpha1 import LeptonJobSpec


def test_checked_in_crds_match_the_api_models() -> None:
    for name, text in crdgen.render_all().items():
        path = crdgen.CRD_DIR / name
        assert path.exists(), f"{path} is missing — run `python -m lepton.api.crdgen`"
        assert path.read_text() == text, f"{path} drifted — run `python -m lepton.api.crdgen`"


def test_crdgen_check_fails_when_a_crd_drifted(tmp_path: Any) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    victim = next(tmp_path.iterdir())
    victim.write_text(victim.read_text().replace("limitWattHours", "limitWh"))
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, child in node.items():
            found.extend(_walk(child, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found.extend(_walk(child, f"{path}[{i}]"))
    return found


@pytest.mark.parametrize("name", sorted(crdgen.render_all()))
def test_crd_schemas_are_structural(name: str) -> None:
    crd = yaml.safe_load(crdgen.render_all()[name])
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        if "properties" in node and isinstance(node["properties"], dict):
            assert node.get("type") == "object", path
            assert "additionalProperties" not in node, path


def test_crds_carry_short_names_category_status_and_columns() -> None:
    crds = {
        yaml.safe_load(t)["spec"]["names"]["kind"]: yaml.safe_load(t)
        for t in crdgen.render_all().values()
    }
    assert crds["EnergyBudget"]["spec"]["names"]["shortNames"] == ["eb"]
    assert crds["LeptonJob"]["spec"]["names"]["shortNames"] == ["lj"]
    for crd in crds.values():
        assert crd["spec"]["names"]["categories"] == ["lepton"]
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
    lj_columns = [
        c["name"] for c in crds["LeptonJob"]["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert lj_columns == ["State", "Budget", "GPUs", "GPU Model", "Est Wh", "Used Wh", "Age"]
    eb_columns = [
        c["name"] for c in crds["EnergyBudget"]["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert eb_columns == ["Limit Wh", "Used Wh", "Held Wh", "Remaining Wh", "Queued", "Age"]


def test_every_cel_rule_has_a_message_naming_its_field() -> None:
    for text in crdgen.render_all().values():
        crd = yaml.safe_load(text)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            for rule in (
                node.get("x-kubernetes-validations", [])
                if isinstance(node.get("x-kubernetes-validations"), list)
                else []
            ):
                assert rule["message"].startswith("spec."), (path, rule)


def test_work_converts_a_duration_into_reference_gpu_hours() -> None:
    spec = LeptonJobSpec.model_validate(
        {
            "budgetName": "team-a",
            "template": {},
            "replicas": 2,
            "gpusPerReplica": 4,
            "work": {"durationSeconds": 1800},
        }
    )
    assert spec.total_gpus() == 8
    assert spec.work_reference_gpu_hours() == pytest.approx(4.0)
    assert spec.power_cap_hint() == "Auto"
