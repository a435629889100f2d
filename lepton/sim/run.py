"""The entry point behind ``lepton simulate`` and the simulation benchmark.

Reads the trace, runs every requested policy with one configuration, writes the
JSON, the markdown table and the charts, and returns the table to print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import DEFAULT_MODEL_MAP, SimConfig
from .policies import ALL_POLICIES, PolicyName
from .report import markdown_table, run_policies, write_outputs
from .trace import (
    DEFAULT_NODE_LIST,
    DEFAULT_POD_LIST,
    default_trace_dir,
    load_nodes,
    load_pods,
    sample_nodes,
)


@dataclass(frozen=True)
class RunOutcome:
    """What one ``lepton simulate`` run produced."""

    report: dict[str, Any]
    table: str
    files: list[Path]


def parse_model_map(items: Sequence[str]) -> dict[str, str]:
    """``["G2=A100", "G3=H100"]`` on top of the defaults; errors say how to write one."""
    mapping = dict(DEFAULT_MODEL_MAP)
    for item in items:
        trace_model, sep, profile_model = item.partition("=")
        if not sep or not trace_model or not profile_model:
            raise ValueError(f"--gpu-model {item!r}: write TRACE_MODEL=PROFILE_MODEL, e.g. G2=A100")
        mapping[trace_model.strip()] = profile_model.strip()
    return mapping


def cli_run(
    *,
    pods_path: Path | None = None,
    nodes_path: Path | None = None,
    out_dir: Path = Path("results"),
    name: str = "simulation",
    policies: Sequence[str] = (),
    seed: int = 0,
    pod_limit: int | None = None,
    node_count: int | None = None,
    model_map: Mapping[str, str] | None = None,
    trace_speed: float | None = None,
    scale_in_grace_seconds: float = SimConfig.scale_in_grace_seconds,
    deadline_factor: float = SimConfig.deadline_factor,
    time_compression: float = 1.0,
) -> RunOutcome:
    """Simulate the trace under each policy and write ``<name>.json|.md|_*.png``."""
    trace_dir = default_trace_dir()
    pods = load_pods(pods_path or trace_dir / DEFAULT_POD_LIST, limit=pod_limit)
    nodes = load_nodes(nodes_path or trace_dir / DEFAULT_NODE_LIST)
    if node_count is not None:
        nodes = sample_nodes(nodes, node_count)
    try:
        chosen = tuple(PolicyName(p) for p in policies) or ALL_POLICIES
    except ValueError:
        known = ", ".join(p.value for p in PolicyName)
        raise ValueError(f"unknown policy in {list(policies)}: choose from {known}") from None
    config = SimConfig(
        seed=seed,
        model_map=dict(model_map or DEFAULT_MODEL_MAP),
        trace_speed=trace_speed,
        scale_in_grace_seconds=scale_in_grace_seconds,
        deadline_factor=deadline_factor,
        time_compression=time_compression,
    )
    report = run_policies(pods, nodes, config, chosen)
    files = write_outputs(report, out_dir, name)
    return RunOutcome(report, markdown_table(report), files)
