"""Importing Lepton stays cheap: the SDK, Kubernetes and the frameworks load only when used."""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return {name.split(".")[0] for name in json.loads(result.stdout)} | set(
        json.loads(result.stdout)
    )


def test_import_lepton_does_not_load_the_sdk() -> None:
    assert "lepton.sdk" not in loaded_after("import lepton")


def test_the_sdk_loads_no_kubernetes_client_framework_or_profile_data() -> None:
    loaded = loaded_after("from lepton import LeptonEngine")
    assert "lepton.sdk.engine" in loaded
    for heavy in ("kubernetes", "torch", "tensorflow", "keras", "yaml", "lepton.core.profiles"):
        assert heavy not in loaded, f"{heavy} is imported eagerly by the SDK"
