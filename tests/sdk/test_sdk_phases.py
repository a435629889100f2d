"""Phase metering: what a phase records, the table, the JSON and the pod annotation."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from lepton.hw.fake_nvml import FakeClock
from lepton.sdk import LeptonEngine
from lepton.sdk.annotate import ANNOTATION_PHASES, PodAnnotator, pod_identity
from lepton.sdk.meters import MeterSource


class ConstantPowerMeter:
    """A meter drawing fixed watts on the fake clock."""

    needs_polling = False

    def __init__(
        self, name: str, device: str, watts: float, clock: FakeClock, source: MeterSource
    ) -> None:
        self.name, self.device, self.source = name, device, source
        self.description = f"{watts} W, {source}"
        self._watts, self._clock, self._start = watts, clock, clock()

    def energy_joules_total(self) -> float:
        return (self._clock() - self._start) * self._watts


class RecordingPatcher:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.calls.append((namespace, name, body))


def engine_with(
    clock: FakeClock, *, gpu_source: MeterSource = MeterSource.NVML, annotator: Any = None
) -> LeptonEngine:
    meters = [
        ConstantPowerMeter("gpu:GPU-1", "gpu", 200.0, clock, gpu_source),
        ConstantPowerMeter("cpu:package-0", "cpu", 50.0, clock, MeterSource.RAPL),
    ]
    return LeptonEngine(
        meters=meters,
        clock=clock,
        wall_clock=lambda: 1_700_000_000 + clock(),
        annotator=annotator or PodAnnotator(None),
        output=io.StringIO(),
    )


def test_phase_records_its_time_and_each_meters_energy() -> None:
    clock = FakeClock()
    engine = engine_with(clock)
    with engine.phase("train"):
        clock.advance(36)
    (record,) = engine.records
    assert record.name == "train"
    assert record.duration_seconds == pytest.approx(36)
    assert record.energy_joules_by_meter == {
        "gpu:GPU-1": pytest.approx(7200),
        "cpu:package-0": pytest.approx(1800),
    }


def test_phase_works_as_a_decorator_and_repeated_runs_add_up() -> None:
    clock = FakeClock()
    engine = engine_with(clock)

    @engine.phase("eval")
    def evaluate(seconds: float) -> str:
        clock.advance(seconds)
        return "done"

    assert evaluate(10) == "done"
    assert evaluate(26) == "done"
    (summary,) = engine.summaries()
    assert summary.count == 2
    assert summary.duration_seconds == pytest.approx(36)
    assert summary.energy_watt_hours == pytest.approx(250 * 36 / 3600)


def test_a_failing_phase_is_still_recorded_and_the_error_propagates() -> None:
    clock = FakeClock()
    engine = engine_with(clock)
    with pytest.raises(ValueError, match="bad batch"), engine.phase("train"):
        clock.advance(5)
        raise ValueError("bad batch")
    assert engine.records[0].duration_seconds == pytest.approx(5)


def test_nested_phases_are_shown_but_not_counted_twice_in_the_total() -> None:
    clock = FakeClock()
    engine = engine_with(clock)
    with engine.phase("epoch"):
        clock.advance(10)
        with engine.phase("eval"):
            clock.advance(10)
    document = engine.to_json()
    assert document["totalEnergyWattHours"] == pytest.approx(250 * 20 / 3600)
    depths = {p["name"]: p["depth"] for p in document["phases"]}
    assert depths == {"epoch": 0, "eval": 1}
    assert "\n  eval" in engine.table()


def test_table_shows_watt_hours_per_device_and_a_total() -> None:
    clock = FakeClock()
    engine = engine_with(clock)
    with engine.phase("init"):
        clock.advance(3.6)
    with engine.phase("train"):
        clock.advance(360)
    table = engine.table()
    lines = table.splitlines()
    assert lines[0].split() == [
        "Phase", "Runs", "Time", "(s)", "GPU", "(Wh)", "CPU", "(Wh)",
        "Total", "(Wh)", "Share", "Source",
    ]  # fmt: skip
    train = next(line for line in lines if line.startswith("train"))
    assert train.split() == [
        "train",
        "1",
        "360.00",
        "20.0000",
        "5.0000",
        "25.0000",
        "99%",
        "measured",
    ]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[-3:] == ["25.2500", "100%", "measured"]
    assert "gpu:GPU-1: 200.0 W, nvml" in table


def test_a_phase_with_any_estimated_meter_is_labelled_so() -> None:
    clock = FakeClock()
    engine = engine_with(clock, gpu_source=MeterSource.MODEL)
    with engine.phase("train"):
        clock.advance(1)
    assert engine.summaries()[0].source_label == "mixed"
    assert engine.to_json()["phases"][0]["estimated"] is True
    assert [m["estimated"] for m in engine.to_json()["meters"]] == [True, False]


def test_report_prints_the_table_and_saves_the_json(tmp_path: Path) -> None:
    clock = FakeClock()
    engine = engine_with(clock)
    with engine.phase("train"):
        clock.advance(72)
    out = io.StringIO()
    engine._output = out
    engine.report(tmp_path / "out" / "phases.json")
    saved = json.loads((tmp_path / "out" / "phases.json").read_text())
    assert saved["phases"][0]["energyWattHours"] == pytest.approx(5.0)
    assert saved["phases"][0]["energyWattHoursByDevice"] == {
        "cpu": pytest.approx(1.0),
        "gpu": pytest.approx(4.0),
    }
    assert saved["runs"][0]["startTime"].endswith("Z")
    assert "train" in out.getvalue() and "Phases saved to" in out.getvalue()


def test_phases_reach_the_pod_annotation_compactly_and_throttled() -> None:
    clock = FakeClock()
    patcher = RecordingPatcher()
    annotator = PodAnnotator(
        ("ml", "job-0-abc"), lambda: patcher, min_interval_seconds=30, clock=clock
    )
    engine = engine_with(clock, annotator=annotator)
    for _ in range(3):  # three 1 s epochs: only the first is published at once
        with engine.phase("train"):
            clock.advance(1)
    assert len(patcher.calls) == 1
    engine.close()  # the final state is always published
    assert len(patcher.calls) == 2
    namespace, name, body = patcher.calls[-1]
    assert (namespace, name) == ("ml", "job-0-abc")
    value = body["metadata"]["annotations"][ANNOTATION_PHASES]
    assert " " not in value  # compact JSON
    summary = json.loads(value)
    assert summary["phases"] == [
        {
            "name": "train",
            "count": 3,
            "durationSeconds": 3.0,
            "energyWattHours": pytest.approx(250 * 3 / 3600, abs=1e-6),
            "estimated": False,
        }
    ]
    assert summary["schemaVersion"] == 1
    assert summary["updateTime"].endswith("Z")


def test_a_failing_api_call_never_interrupts_training() -> None:
    clock = FakeClock()

    def forbidden() -> Any:
        raise PermissionError("pods 'job-0' is forbidden: cannot patch")

    annotator = PodAnnotator(("ml", "job-0"), forbidden, clock=clock)
    engine = engine_with(clock, annotator=annotator)
    with engine.phase("train"):
        clock.advance(1)
    with engine.phase("train"):
        clock.advance(1)
    engine.close()
    assert not annotator.enabled
    assert annotator.writes == 0
    assert len(engine.records) == 2


def test_pod_identity_comes_from_the_downward_api_env() -> None:
    assert pod_identity({"POD_NAME": "p", "POD_NAMESPACE": "ns"}) == ("ns", "p")
    assert pod_identity({"POD_NAME": "p"}) is None
    assert not PodAnnotator(None).enabled


def test_meters_that_wrap_are_polled_in_the_background_until_close() -> None:
    import threading

    reads = threading.Semaphore(0)

    class WrappingMeter:
        name, device, source, description = "cpu:package-0", "cpu", MeterSource.RAPL, "rapl"
        needs_polling = True

        def energy_joules_total(self) -> float:
            reads.release()
            return 0.0

    engine = LeptonEngine(
        meters=[WrappingMeter()], poll_interval_seconds=0.01, annotator=PodAnnotator(None)
    )
    for _ in range(3):  # polled without any phase being entered
        assert reads.acquire(timeout=5)
    engine.close()
    assert engine._poller is None
