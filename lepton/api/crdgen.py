"""Generate the CustomResourceDefinitions in ``lepton/api/crds/`` from the pydantic models.

pydantic writes JSON Schema (2020-12); the apiserver wants a *structural* OpenAPI v3 schema:
no ``$ref``, no ``anyOf`` with ``null``, no ``additionalProperties: false`` beside
``properties``, no titles. This module rewrites one into the other and adds what only a CRD
has: the status subresource, printer columns, short names and categories.

Run ``python -m lepton.api.crdgen`` to rewrite ``lepton/api/crds/``; ``--check`` exits non-zero
when the checked-in files differ (the drift test calls :func:`render_all`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lepton.api import crd_dir
from lepton.api.v1alpha1 import EnergyBudget, LeptonJob
from lepton.core.names import GROUP, VERSION

CRD_DIR = crd_dir()

# Keys of a JSON Schema that a structural CRD schema keeps as they are.
_KEPT = {
    "type",
    "description",
    "default",
    "enum",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string",
}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` and collapse ``anyOf: [X, null]`` into X, keeping the outer keys."""
    outer = {k: v for k, v in node.items() if k not in ("$ref", "anyOf")}
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**_resolve(target, defs), **outer}
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"a CRD schema cannot express the union {node['anyOf']!r}")
        return {**_resolve(variants[0], defs), **outer}
    return node


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic JSON Schema node."""
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _KEPT:
            out[key] = value
    if out.get("default", "") is None or out.get("default") in ([], {}):
        del out["default"]
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {
            name: structural(child, defs) for name, child in node["properties"].items()
        }
        if node.get("required"):
            out["required"] = list(node["required"])
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(node["additionalProperties"], defs)
    if "items" in node:
        out["items"] = structural(node["items"], defs)
    return dict(sorted(out.items()))


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    top = structural(raw, defs)
    props = top["properties"]
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    top["required"] = ["spec"]
    return top


def _column(name: str, json_path: str, kind: str, description: str) -> dict[str, str]:
    return {"name": name, "type": kind, "jsonPath": json_path, "description": description}


_AGE = _column("Age", ".metadata.creationTimestamp", "date", "Time since creation.")

PRINTER_COLUMNS: dict[str, list[dict[str, str]]] = {
    "EnergyBudget": [
        _column("Limit Wh", ".spec.limitWattHours", "integer", "Watt-hours per period."),
        _column("Used Wh", ".status.consumedWattHours", "number", "Consumed this period."),
        _column("Held Wh", ".status.heldWattHours", "number", "Held for admitted jobs."),
        _column("Remaining Wh", ".status.remainingWattHours", "number", "Left for new jobs."),
        _column("Queued", ".status.queuedJobs", "integer", "Jobs waiting for watt-hours."),
        _AGE,
    ],
    "LeptonJob": [
        _column("State", ".status.state", "string", "Waiting, Admitted, Running, Finished..."),
        _column("Budget", ".spec.budgetName", "string", "The EnergyBudget that pays."),
        _column("GPUs", ".status.gpus", "integer", "GPUs the job runs on at once."),
        _column("GPU Model", ".status.gpuModel", "string", "GPU model of the estimate."),
        _column("Est Wh", ".status.estimatedWattHours", "number", "Model estimate reserved."),
        _column("Used Wh", ".status.consumedWattHours", "number", "Consumed so far."),
        _AGE,
    ],
}

_NAMES: dict[str, tuple[str, str, str]] = {
    # kind: (plural, singular, short name)
    "EnergyBudget": ("energybudgets", "energybudget", "eb"),
    "LeptonJob": ("leptonjobs", "leptonjob", "lj"),
}


def render_crd(model: type[BaseModel], kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, as a dict."""
    plural, singular, short = _NAMES[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": [short],
                "categories": ["lepton"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS[kind],
                    "schema": {"openAPIV3Schema": _schema(model)},
                }
            ],
        },
    }


HEADER = "# Generated by `python -m lepton.api.crdgen` from lepton/api/v1alpha1.py; do not edit.\n"


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    out: dict[str, str] = {}
    for model, kind in ((EnergyBudget, "EnergyBudget"), (LeptonJob, "LeptonJob")):
        plural = _NAMES[kind][0]
        text = yaml.safe_dump(render_crd(model, kind), sort_keys=False, width=100)
        out[f"{GROUP}_{plural}.yaml"] = HEADER + text
    return out


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the CRDs in ``lepton/api/crds/``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when the CRDs are out of date")
    parser.add_argument("--out", type=Path, default=CRD_DIR)
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            "CRDs out of date: " + ", ".join(stale) + " — run `python -m lepton.api.crdgen`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
