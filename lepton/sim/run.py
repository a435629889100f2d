"""The entry point behind ``lepton simulate`` and the simulation benchmark.

Reads the trace, runs every requested policy with one configuration, writes the
JSON, the markdown table and the charts, and returns the table to print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import DEFAULT_MODEL_MAP, SimConfig, SimConfigError
from .policies import ALL_POLICIES, PolicyName
from .report import DEFAULT_LOAD_TARGETS, DEFAULT_SEEDS, markdown_table, run_study, write_outputs
from .trace import (
    DEFAULT_KIND_MAP,
    DEFAULT_NODE_LIST,
    DEFAULT_POD_LIST,
    default_trace_dir,
    load_nodes,
    load_pods,
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
            raise SimConfigError(
                f"--gpu-model {item!r}: write TRACE_MODEL=PROFILE_MODEL, e.g. G2=A100"
            )
        mapping[trace_model.strip()] = profile_model.strip()
    return mapping


def parse_kind_map(items: Sequence[str]) -> dict[str, str]:
    """``["BE=Service"]`` on top of the default QoS -> kind mapping."""
    mapping = dict(DEFAULT_KIND_MAP)
    for item in items:
        qos, sep, kind = item.partition("=")
        if not sep or kind.strip() not in ("Service", "Batch"):
            raise SimConfigError(f"--kind {item!r}: write QOS=Service or QOS=Batch, e.g. BE=Batch")
        mapping[qos.strip()] = kind.strip()
    return mapping


def parse_loads(items: Sequence[str]) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """``--load 60%`` (a target allocation, found by search) or ``--load x0.008`` (a scale)."""
    if not items:
        return None, None
    scales: dict[str, float] = {}
    targets: dict[str, float] = {}
    for item in items:
        text = item.strip()
        try:
            if text.startswith("x"):
                scales[text] = float(text[1:])
            else:
                targets[text] = float(text.rstrip("%")) / 100
        except ValueError:
            raise SimConfigError(
                f"--load {item!r}: write a target allocation like 60% "
                "or an arrival scale like x0.008"
            ) from None
    if not all(scale > 0 for scale in scales.values()):
        raise SimConfigError("--load: an arrival scale must be positive (x0.5 = twice the load)")
    if scales and targets:
        raise SimConfigError("--load: give target allocations or arrival scales, not both")
    return (scales or None), (targets or None)


def cli_run(
    *,
    pods_path: Path | None = None,
    nodes_path: Path | None = None,
    out_dir: Path = Path("results"),
    name: str = "simulation",
    policies: Sequence[str] = (),
    seeds: Sequence[int] = DEFAULT_SEEDS,
    pod_limit: int | None = None,
    node_count: int | None = 150,
    model_map: Mapping[str, str] | None = None,
    kind_map: Mapping[str, str] | None = None,
    loads: Sequence[str] = (),
    regimes: Sequence[str] = ("scale_in", "always_on"),
    workers: int = 1,
    progress: Any = None,
    **config: Any,
) -> RunOutcome:
    """Simulate the trace under each policy at each load, seed and regime; write the outputs.

    ``config`` holds any further :class:`SimConfig` field (e.g. ``trace_speed``,
    ``scale_in_grace_seconds``, ``provisioning_delay_seconds``, ``expander``).
    """
    trace_dir = default_trace_dir()
    pods = load_pods(pods_path or trace_dir / DEFAULT_POD_LIST, limit=pod_limit)
    nodes = load_nodes(nodes_path or trace_dir / DEFAULT_NODE_LIST)
    try:
        chosen = tuple(PolicyName(p) for p in policies) or ALL_POLICIES
    except ValueError:
        known = ", ".join(p.value for p in PolicyName)
        raise SimConfigError(f"unknown policy in {list(policies)}: choose from {known}") from None
    sim_config = SimConfig(
        model_map=dict(model_map or DEFAULT_MODEL_MAP),
        kind_map=dict(kind_map or DEFAULT_KIND_MAP),
        **{"warmup_fraction": 0.1} | config,
    )
    scales, targets = parse_loads(loads)
    report = run_study(
        pods,
        nodes,
        sim_config,
        policies=chosen,
        loads=scales,
        load_targets=targets or DEFAULT_LOAD_TARGETS,
        seeds=seeds,
        regimes=regimes,
        node_count=node_count,
        workers=workers,
        progress=progress,
    )
    report["trace"]["podList"] = str(pods_path or DEFAULT_POD_LIST)
    files = write_outputs(report, out_dir, name)
    return RunOutcome(report, markdown_table(report), files)
