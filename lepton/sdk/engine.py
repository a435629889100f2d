"""``LeptonEngine``: the one object a training script holds.

It finds the meters (NVML, RAPL, or the profile model, labelled so), records
the phases the script marks with ``with engine.phase("train"):`` (or the same as
a decorator), prints where the energy went, saves it as JSON, and publishes it on
the pod for the LeptonJob status. ``engine.optimize(step, batches)`` runs a
training loop while choosing a GPU power limit (see ``lepton.sdk.optimizer``).
All hardware access goes through injectable pieces (meters, GPUs, clocks), so the
engine is tested with a fake NVML and a fake clock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from lepton.sdk.annotate import PodAnnotator, pod_identity
from lepton.sdk.meters import Meter, MeterSource, discover_meters, read_all
from lepton.sdk.optimizer import (
    OptimizerConfig,
    OptimizeReport,
    PowerLimitedGpu,
    PowerLimitOptimizer,
)
from lepton.sdk.phases import (
    MeterInfo,
    PhaseRecord,
    PhaseSummary,
    phases_annotation,
    phases_document,
    render_table,
    summarize,
)

log = logging.getLogger(__name__)

# Where report() saves the JSON when no path is given (a job's output volume, say).
PHASES_FILE_ENV = "LEPTON_PHASES_FILE"

T = TypeVar("T")
Clock = Callable[[], float]


class LeptonEngine:
    """Phase metering and power-limit optimisation for one training process."""

    def __init__(
        self,
        *,
        gpu_model: str | None = None,
        gpu_count: int = 1,
        nvml: Any = None,
        use_nvml: bool = True,
        powercap_root: Path | None = None,
        meters: Sequence[Meter] | None = None,
        gpus: Sequence[PowerLimitedGpu] | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        process_clock: Clock = time.process_time,
        poll_interval_seconds: float | None = 5.0,
        json_path: str | Path | None = None,
        annotator: PodAnnotator | None = None,
        output: TextIO | None = None,
    ) -> None:
        """Find the meters, unless given.

        ``gpu_model`` (or ``$LEPTON_GPU_MODEL``) names the GPUs to estimate when
        there is no NVML. ``meters`` and ``gpus`` replace discovery (tests, or a
        caller with its own meters). ``poll_interval_seconds`` is how often
        meters that need it (RAPL wraps, power sampling) are read in the
        background; None turns the poller off.
        """
        self.notes: list[str] = []
        if meters is None:
            found = discover_meters(
                nvml=nvml,
                use_nvml=use_nvml,
                powercap_root=powercap_root,
                gpu_model=gpu_model,
                gpu_count=gpu_count,
                clock=clock,
                process_clock=process_clock,
            )
            self.meters: list[Meter] = list(found.meters)
            self.gpus: list[PowerLimitedGpu] = list(found.gpus) if gpus is None else list(gpus)
            self.notes.extend(found.notes)
        else:
            self.meters = list(meters)
            self.gpus = list(gpus or [])
        self._clock = clock
        self._wall_clock = wall_clock
        self._json_path = json_path
        self._output = output
        self.annotator = annotator if annotator is not None else PodAnnotator(pod_identity())
        self.records: list[PhaseRecord] = []
        self.optimize_reports: list[OptimizeReport] = []
        # The optimizer of the optimize() call in progress, for loops that want its state.
        self.active_optimizer: PowerLimitOptimizer | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        if poll_interval_seconds and any(m.needs_polling for m in self.meters):
            self._poller = threading.Thread(
                target=self._poll, args=(poll_interval_seconds,), name="lepton-meters", daemon=True
            )
            self._poller.start()

    # -- metering ---------------------------------------------------------------

    def _poll(self, interval_seconds: float) -> None:
        polled = [m for m in self.meters if m.needs_polling]
        while not self._stop.wait(interval_seconds):
            read_all(polled)

    @property
    def meter_infos(self) -> list[MeterInfo]:
        return [
            MeterInfo(
                name=m.name,
                device=m.device,
                source=str(m.source),
                estimated=m.source.estimated,
                description=m.description,
            )
            for m in self.meters
        ]

    @property
    def measured(self) -> bool:
        """Whether any meter measures rather than estimates."""
        return any(m.source is not MeterSource.MODEL for m in self.meters)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Meter the enclosed block (or decorated function) as phase ``name``.

        Runs of the same name add up in the table; a phase inside another is
        shown indented and not added to the total twice.
        """
        depth: int = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        start_wall, start = self._wall_clock(), self._clock()
        before = read_all(self.meters)
        try:
            yield
        finally:
            after = read_all(self.meters)
            duration = self._clock() - start
            self._local.depth = depth
            energy = {
                meter: max(0.0, after[meter] - before[meter]) for meter in before if meter in after
            }
            with self._lock:
                self.records.append(PhaseRecord(name, start_wall, duration, energy, depth))
            if depth == 0:
                self._publish(force=False)

    def summaries(self) -> list[PhaseSummary]:
        with self._lock:
            records = list(self.records)
        return summarize(records, self.meter_infos)

    def table(self) -> str:
        """The phases table, with what each meter is."""
        with self._lock:
            records = list(self.records)
        meters = self.meter_infos
        text = render_table(summarize(records, meters), meters)
        for report in self.optimize_reports:
            text += "\n\n" + report.summary()
        return text

    def _extra(self) -> dict[str, Any]:
        if not self.optimize_reports:
            return {}
        last = self.optimize_reports[-1]
        power_limit: dict[str, Any] = {"tuned": last.tuned, "reason": last.reason}
        if last.tuned:
            power_limit.update(
                watts=last.chosen_power_limit_watts,
                defaultWatts=last.default_power_limit_watts,
                energySavedFraction=last.energy_saved_fraction,
                slowdownFraction=last.slowdown_fraction,
            )
        return {"powerLimit": power_limit}

    def to_json(self) -> dict[str, Any]:
        """The full phases document (meters, per-phase sums, every run, optimizer results)."""
        with self._lock:
            records = list(self.records)
        extra = self._extra()
        if self.optimize_reports:
            extra["optimizeRuns"] = [r.to_dict() for r in self.optimize_reports]
        if self.notes:
            extra["notes"] = list(self.notes)
        return phases_document(records, self.meter_infos, extra)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    def _publish(self, *, force: bool) -> None:
        if not self.annotator.enabled:
            return
        with self._lock:
            records = list(self.records)
        summary = phases_annotation(records, self.meter_infos, self._wall_clock(), self._extra())
        self.annotator.publish(summary, force=force)

    def report(self, json_path: str | Path | None = None) -> str:
        """Print the table, save the JSON (if a path is known) and publish on the pod."""
        text = self.table()
        print(text, file=self._output or sys.stdout)
        path = json_path or self._json_path or os.environ.get(PHASES_FILE_ENV)
        if path:
            saved = self.save_json(path)
            print(f"Phases saved to {saved}", file=self._output or sys.stdout)
        self._publish(force=True)
        return text

    def close(self) -> None:
        """Stop the background poller and publish the final phases."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None
        self._publish(force=True)

    def __enter__(self) -> LeptonEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- power-limit optimisation --------------------------------------------------

    def _gpu_energy_joules_total(self) -> float:
        readings = read_all([m for m in self.meters if m.device == "gpu"])
        return sum(readings.values())

    def power_limit_optimizer(
        self,
        settings: OptimizerConfig | None = None,
        synchronize: Callable[[], object] | None = None,
    ) -> PowerLimitOptimizer | str:
        """An optimizer over this engine's GPUs, or the reason there can be none."""
        if not self.gpus:
            why = [n.removeprefix("no GPU measured: ") for n in self.notes if "NVML" in n]
            reason = "no GPU power limit can be set here"
            return f"{reason}: {why[0]}" if why else f"{reason} (no NVML GPU)"
        if not any(m.device == "gpu" and not m.source.estimated for m in self.meters):
            return "no GPU energy is measured, and a limit is only chosen from measurements"
        try:
            return PowerLimitOptimizer(
                self.gpus, self._gpu_energy_joules_total, settings, self._clock, synchronize
            )
        except Exception as error:  # NVML may refuse limit queries on some boards
            return f"the GPUs' power limits cannot be read ({error})"

    def optimize(
        self,
        step: Callable[[T], object],
        batches: Iterable[T] | int,
        *,
        max_slowdown: float = 0.05,
        settings: OptimizerConfig | None = None,
        synchronize: Callable[[], object] | None = None,
        phase: str = "train",
    ) -> OptimizeReport:
        """Train with ``step`` over ``batches`` while choosing the GPU power limit.

        ``step(batch)`` runs one training step; ``batches`` is any iterable (a
        data loader) or a number of steps (``step`` then gets the step index).
        The first steps profile each candidate limit; the rest train at the limit
        with the least energy per step among those at most ``max_slowdown``
        slower than the default. The GPUs' limits are restored afterwards.
        ``synchronize`` (``torch.cuda.synchronize``) makes the step times exact.
        ``settings``, when given, carries its own ``max_slowdown``.
        Without a GPU whose limit can be set, trains unchanged and says so.
        """
        if settings is None:
            settings = OptimizerConfig(max_slowdown=max_slowdown)
        items: Iterable[Any] = range(batches) if isinstance(batches, int) else batches
        session = OptimizeSession(self, settings, synchronize, phase)
        session.begin()
        try:
            for item in items:
                session.step_begin()
                step(item)
                session.step_end()
        except BaseException:
            session.end()
            raise
        return session.end()

    def _record_optimize(self, report: OptimizeReport) -> None:
        self.optimize_reports.append(report)
        log.info("optimize: %s", report.summary().splitlines()[0])
        self._publish(force=True)


class OptimizeSession:
    """``LeptonEngine.optimize`` cut into begin, per-step hooks and end.

    For frameworks that own the training loop (Keras' ``fit``): call ``begin``
    when training starts, ``step_begin``/``step_end`` around each step and
    ``end`` when it stops, which restores the GPUs' limits and returns the
    report. ``optimize`` itself runs on this, so both behave the same.
    """

    def __init__(
        self,
        engine: LeptonEngine,
        settings: OptimizerConfig | None = None,
        synchronize: Callable[[], object] | None = None,
        phase: str = "train",
    ) -> None:
        self.engine = engine
        self.settings = settings or OptimizerConfig()
        self.synchronize = synchronize
        self.phase = phase
        self.optimizer: PowerLimitOptimizer | None = None
        self.reason = ""
        self.steps = 0
        self.report: OptimizeReport | None = None
        self._stack: contextlib.ExitStack | None = None
        self._start = 0.0

    @property
    def active(self) -> bool:
        """Begun and not yet ended."""
        return self._stack is not None and self.report is None

    def begin(self) -> None:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self.engine.phase(self.phase))
        self._start = self.engine._clock()
        found = self.engine.power_limit_optimizer(self.settings, self.synchronize)
        if isinstance(found, str):
            self.reason = found
        else:
            self.optimizer = found
            self.engine.active_optimizer = found

    def step_begin(self) -> None:
        if self.optimizer is not None:
            self.optimizer.on_step_begin()

    def step_end(self) -> None:
        self.steps += 1
        if self.optimizer is not None:
            self.optimizer.on_step_end()

    def end(self) -> OptimizeReport:
        """Restore the limits, close the phase and record the report; safe to call once."""
        if self.report is not None:
            return self.report
        try:
            if self.optimizer is not None:
                self.optimizer.restore()
                self.engine.active_optimizer = None
                report = self.optimizer.conclude()
            else:
                report = OptimizeReport(
                    tuned=False,
                    reason=self.reason,
                    steps=self.steps,
                    seconds=self.engine._clock() - self._start,
                    max_slowdown=self.settings.max_slowdown,
                )
        finally:
            if self._stack is not None:
                self._stack.close()
        self.report = report
        self.engine._record_optimize(report)
        return report
