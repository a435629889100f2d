"""Phases of a job and the energy each one spent: records, the table, the JSON.

A data scientist asks "where did the energy go: loading, training,
evaluating?". The engine records one ``PhaseRecord`` per ``with
engine.phase(...)``; this module sums them per phase name, renders the table
printed at the end of a job, and the JSON document saved beside it (and copied,
compacted, into the pod's ``lepton.dev/phases`` annotation). Pure: no clocks, no
meters, so the arithmetic and the rendering are tested on plain numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lepton.core.metering import JOULES_PER_WATT_HOUR

# Bumped when the JSON document or the annotation changes shape.
PHASES_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class MeterInfo:
    """What the table and the JSON say about one meter."""

    name: str
    device: str
    source: str
    estimated: bool
    description: str


@dataclass(frozen=True)
class PhaseRecord:
    """One run of one phase: when, how long, and the joules each meter counted."""

    name: str
    start_time_unix: float
    duration_seconds: float
    energy_joules_by_meter: Mapping[str, float]
    # 0 for a phase entered outside any other; nested phases are not added to the total.
    depth: int = 0


@dataclass
class PhaseSummary:
    """All runs of one phase name, added up."""

    name: str
    count: int = 0
    duration_seconds: float = 0.0
    energy_joules_by_device: dict[str, float] = field(default_factory=dict)
    estimated: bool = False
    measured: bool = False
    depth: int = 0

    @property
    def energy_joules(self) -> float:
        return sum(self.energy_joules_by_device.values())

    @property
    def energy_watt_hours(self) -> float:
        return self.energy_joules / JOULES_PER_WATT_HOUR

    @property
    def source_label(self) -> str:
        """``measured``, ``estimated``, or ``mixed`` when some meters measured and some did not."""
        if self.estimated and self.measured:
            return "mixed"
        return "estimated" if self.estimated else "measured"


def summarize(records: Sequence[PhaseRecord], meters: Sequence[MeterInfo]) -> list[PhaseSummary]:
    """Records added up per phase name, in the order each name first started."""
    by_meter = {meter.name: meter for meter in meters}
    summaries: dict[str, PhaseSummary] = {}
    for record in sorted(records, key=lambda r: r.start_time_unix):
        summary = summaries.setdefault(record.name, PhaseSummary(record.name, depth=record.depth))
        summary.depth = min(summary.depth, record.depth)
        summary.count += 1
        summary.duration_seconds += record.duration_seconds
        for meter_name, joules in record.energy_joules_by_meter.items():
            meter = by_meter.get(meter_name)
            device = meter.device if meter else "other"
            summary.energy_joules_by_device[device] = (
                summary.energy_joules_by_device.get(device, 0.0) + joules
            )
            if meter is None or meter.estimated:
                summary.estimated = True
            else:
                summary.measured = True
    return list(summaries.values())


def _watt_hours(joules: float | None) -> str:
    if joules is None:
        return "-"
    watt_hours = joules / JOULES_PER_WATT_HOUR
    # Small phases (a CPU-only example) still show significant digits.
    return f"{watt_hours:.4f}" if watt_hours >= 0.01 else f"{watt_hours:.6f}"


def render_table(summaries: Sequence[PhaseSummary], meters: Sequence[MeterInfo]) -> str:
    """The phases as a fixed-width table, a total line, and what each meter is.

    Nested phases are indented and left out of the total (their parent already
    counts their energy).
    """
    devices = sorted({meter.device for meter in meters}, key=lambda d: (d != "gpu", d))
    top = [s for s in summaries if s.depth == 0]
    total_joules = sum(s.energy_joules for s in top)
    headers = ["Phase", "Runs", "Time (s)"]
    headers += [f"{device.upper()} (Wh)" for device in devices]
    headers += ["Total (Wh)", "Share", "Source"]
    rows: list[list[str]] = []
    for summary in summaries:
        share = summary.energy_joules / total_joules if total_joules > 0 else 0.0
        rows.append(
            ["  " * summary.depth + summary.name, str(summary.count)]
            + [f"{summary.duration_seconds:.2f}"]
            + [_watt_hours(summary.energy_joules_by_device.get(device)) for device in devices]
            + [_watt_hours(summary.energy_joules), f"{share:.0%}", summary.source_label]
        )
    total = PhaseSummary("total")
    for summary in top:
        total.count += summary.count
        total.duration_seconds += summary.duration_seconds
        total.estimated |= summary.estimated
        total.measured |= summary.measured
        for device, joules in summary.energy_joules_by_device.items():
            total.energy_joules_by_device[device] = (
                total.energy_joules_by_device.get(device, 0.0) + joules
            )
    rows.append(
        ["total", str(total.count), f"{total.duration_seconds:.2f}"]
        + [_watt_hours(total.energy_joules_by_device.get(device)) for device in devices]
        + [_watt_hours(total.energy_joules), "100%" if top else "-", total.source_label]
    )
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:-1], widths[1:-1], strict=True)]
        return "  ".join([first, *rest, cells[-1]]).rstrip()

    rule = "-" * len(line(headers))
    out = [line(headers), rule, *(line(row) for row in rows[:-1]), rule, line(rows[-1])]
    out += ["", "Meters:"]
    out += [f"  {meter.name}: {meter.description}" for meter in meters]
    return "\n".join(out)


def _iso(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat().replace("+00:00", "Z")


def phases_document(
    records: Sequence[PhaseRecord],
    meters: Sequence[MeterInfo],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The full JSON document: meters, per-phase sums and every run."""
    summaries = summarize(records, meters)
    top = [s for s in summaries if s.depth == 0]
    document: dict[str, Any] = {
        "schemaVersion": PHASES_SCHEMA_VERSION,
        "meters": [
            {
                "name": meter.name,
                "device": meter.device,
                "source": meter.source,
                "estimated": meter.estimated,
                "description": meter.description,
            }
            for meter in meters
        ],
        "phases": [
            {
                "name": s.name,
                "count": s.count,
                "depth": s.depth,
                "durationSeconds": s.duration_seconds,
                "energyWattHours": s.energy_watt_hours,
                "energyWattHoursByDevice": {
                    device: joules / JOULES_PER_WATT_HOUR
                    for device, joules in sorted(s.energy_joules_by_device.items())
                },
                "estimated": s.estimated,
            }
            for s in summaries
        ],
        "totalEnergyWattHours": sum(s.energy_watt_hours for s in top),
        "totalDurationSeconds": sum(s.duration_seconds for s in top),
        "runs": [
            {
                "name": record.name,
                "startTime": _iso(record.start_time_unix),
                "durationSeconds": record.duration_seconds,
                "depth": record.depth,
                "energyJoulesByMeter": dict(record.energy_joules_by_meter),
            }
            for record in records
        ],
    }
    if extra:
        document.update(extra)
    return document


def phases_annotation(
    records: Sequence[PhaseRecord],
    meters: Sequence[MeterInfo],
    update_time_unix: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The compact summary written to the pod's ``lepton.dev/phases`` annotation.

    Only per-phase sums (no per-run list), so that the annotation stays small
    however many epochs a job runs.
    """
    summaries = summarize(records, meters)
    top = [s for s in summaries if s.depth == 0]
    annotation: dict[str, Any] = {
        "schemaVersion": PHASES_SCHEMA_VERSION,
        "updateTime": _iso(update_time_unix),
        "phases": [
            {
                "name": s.name,
                "count": s.count,
                "durationSeconds": round(s.duration_seconds, 3),
                "energyWattHours": round(s.energy_watt_hours, 6),
                "estimated": s.estimated,
            }
            for s in top
        ],
        "totalEnergyWattHours": round(sum(s.energy_watt_hours for s in top), 6),
        "estimated": any(s.estimated for s in top),
    }
    if extra:
        annotation.update(extra)
    return annotation
