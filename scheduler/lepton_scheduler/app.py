"""The Lepton scheduler: kube-scheduler's HTTP callout, answered by the core's scorer.

Endpoints:

* ``POST /filter`` and ``POST /prioritize`` — the extender protocol
  (:mod:`lepton_scheduler.protocol`). Pods that are not LeptonJob pods pass
  through untouched: every node passes, every score is equal.
* ``POST /filter-best`` — both in one call, for a profile whose extenders stanza has
  ``filterVerb: filter-best`` and no ``prioritizeVerb``: filter's answer
  narrowed to its best-scored nodes (one round trip a pod instead of two).
* ``GET /healthz``, ``GET /readyz`` (ready once the watch caches are synced),
  ``GET /metrics`` (Prometheus), ``GET /explain?pod=NAMESPACE/NAME`` (the last
  decision for a pod, every term of every node).

This module translates and does I/O; every decision is
:func:`lepton.core.scoring.filter_nodes` / :func:`~lepton.core.scoring.score_nodes`,
the same functions the simulator calls.

No call waits: kube-scheduler calls an extender serially, so every
millisecond here is a millisecond of the whole cluster's scheduling. Hence:

* **Siblings.** kube-scheduler binds a pod asynchronously and asks about the
  job's next replica before the watch has seen the first one bound. Rather
  than wait for the watch, the Lepton scheduler records where it let each replica of
  a spreading job go (:mod:`lepton_scheduler.assumed`): that node counts for
  its siblings at once, until the watch sees the pod bound or deleted, or the
  record expires. So that kube-scheduler's choice cannot land in another
  domain than the one counted, filter lets a replica of a job with
  ``maxReplicasPerDomain`` into one domain only, the domain of its best node.
* **One computation per pod.** filter keeps the candidates' table it built,
  keyed by the pod's UID, the node names it answered and the cache's
  generation; prioritize for the same pod reuses it.
* **A service's demand, read, never fetched.** With Prometheus, a service pod's
  ``u_ref`` comes from its own or its workload's forecast
  (:mod:`lepton_scheduler.demand`): a background thread fetches and forecasts
  the workloads asked about (first when the watch sees a service pod pending);
  a call reads what it kept, and keeps the declared hints until then.
* **Nothing else on the path.** Explanations are kept as the scorer's columns
  and only turned into rows when read; Events are built and posted by a
  background thread, batched and rate-limited; pods without Lepton hints are
  answered without touching the cache.

Every stage of a request is timed into ``lepton_scheduler_phase_duration_seconds``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lepton.core.hints import (
    HintError,
    JobHints,
    hints_from_pod_metadata,
    is_lepton_pod,
    owner_name,
)
from lepton.core.names import (
    ANNOTATION_GPUS_PER_REPLICA,
    ANNOTATION_REFERENCE_UTILIZATION_PERCENT,
    ANNOTATION_WORK_GPU_HOURS,
    EVENT_REASON_SCORED,
    LABEL_BUDGET_NAME,
)
from lepton.core.predictor import HistorySource, LoadPredictor, PredictorConfig
from lepton.core.scoring import (
    DEFAULT_CONFIG,
    CandidateTable,
    Explanation,
    FailureKind,
    ScoreResult,
    ScoringConfig,
    filter_nodes,
    replicas_per_domain,
    score_nodes,
)
from lepton.core.times import parse_time

from .assumed import AssumedPlacements
from .cache import ClusterCache, pod_gpus
from .demand import ServiceDemands
from .events import EventRecorder, event_body
from .history import PrometheusHistory
from .metrics import SchedulerMetrics
from .protocol import (
    ExtenderArgs,
    ProtocolError,
    decode_extender_args,
    dumps,
    encode_filter_result,
    encode_host_priorities,
    loads,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
UNKNOWN_DOMAIN = "not in the Lepton scheduler's cache yet: its domain for spreadAcross is unknown"


@dataclass(frozen=True)
class SchedulerConfig:
    """How the Lepton scheduler behaves; the defaults are what ships."""

    max_body_bytes: int = MAX_BODY_BYTES
    # How long a pod counts where it was let through without the watch seeing it bound.
    assumed_ttl_seconds: float = 30.0
    explanations_kept: int = 10_000
    # Explanations hold every candidate's terms (~170 bytes a node): at most this many node
    # rows over all kept (~170 MB; 10,000 decisions over 5,000 nodes would be 8 GB).
    explanation_rows_kept: int = 1_000_000
    # LeptonScored Events: at most this many a second (a burst of twice as many).
    events_per_second: float = 50.0
    forecast_interval_seconds: float = 60.0
    retrain_interval_seconds: float = 900.0
    history_seconds: float = 86_400.0
    scoring: ScoringConfig = DEFAULT_CONFIG
    predictor: PredictorConfig = field(default_factory=PredictorConfig)


@dataclass
class _Decision:
    explanation: Explanation
    time: datetime
    rows: int = 0


@dataclass(slots=True)
class _Computation:
    """What filter built for a pod, for prioritize on the nodes filter let through."""

    names: tuple[str, ...]  # the node names filter answered, in order
    generation: tuple[int, int]  # the cache's and the assumed record's, when it was built
    hints: JobHints
    table: CandidateTable  # the known ones among ``names``
    unknown: list[str]
    placed: dict[str, int]
    # A replica held to one domain: filter scored all the nodes it passed, and these are the
    # rows of ``names`` among them. prioritize answers from that (the pod's real candidates).
    scored: ScoreResult | None = None
    rows: list[int] | None = None


COMPUTATIONS_KEPT = 16  # kube-scheduler asks prioritize right after filter: a few suffice
DEMAND_NOTES_KEPT = 1_024  # a service's demand, from _hints to the decision explained


class _Stopwatch:
    """Times the stages of one request into the phase histogram."""

    __slots__ = ("_children", "_last", "_verb")

    def __init__(self, metrics: SchedulerMetrics, verb: str, started: float) -> None:
        self._children = metrics.phase
        self._verb = verb
        self._last = started

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self._children[(self._verb, phase)].observe(now - self._last)
        self._last = now


class Scheduler:
    """State shared by the handlers: cache, metrics, last decisions, background work."""

    def __init__(
        self,
        cache: ClusterCache,
        *,
        config: SchedulerConfig | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recorder: EventRecorder | None = None,
        history: HistorySource | None = None,
        require_sync: tuple[str, ...] = (),
    ) -> None:
        self.cache = cache
        self.config = config or SchedulerConfig()
        self.clock = clock
        self.recorder = recorder
        self.history = history
        self.require_sync = require_sync
        self.metrics = SchedulerMetrics()
        self.decisions: OrderedDict[str, _Decision] = OrderedDict()
        self._decision_rows = 0
        self.assumed = AssumedPlacements(self.config.assumed_ttl_seconds)
        self._computed: OrderedDict[str, _Computation] = OrderedDict()
        self._handled: OrderedDict[str, None] = OrderedDict()
        self._seen_pending: set[str] = set()
        # UIDs of pods scored by an earlier run (from its Events); None when unknown.
        self.scored_before_start: set[str] | None = None
        self._watch_errors: dict[str, str] = {}
        self.stop = threading.Event()
        self.predictor = LoadPredictor(self.config.predictor)
        # A service's demand from its workload's history (set by build_app with Prometheus).
        self.demands: ServiceDemands | None = None
        self._demand_notes: OrderedDict[str, str] = OrderedDict()
        if history is not None:
            self.metrics.degraded.labels("no_forecast").set(1)

    # ------------------------------------------------------------------ state

    @property
    def synced(self) -> bool:
        return all(kind in self.cache.synced for kind in self.require_sync)

    @staticmethod
    def settle() -> None:
        """Move the cache's long-lived objects out of the garbage collector's sight.

        A full collection walks every object: ~25 ms with 50,000 cached pods,
        a pause the p99 latency goal cannot afford. Objects alive after a full
        list will live long, so they are frozen (``gc.freeze``) after each list.
        """
        gc.collect()
        gc.freeze()

    def watch_error(self, kind: str, error: BaseException | None) -> None:
        if error is None:
            self._watch_errors.pop(kind, None)
            self.settle()  # called after each successful list
        else:
            log.warning("watch of %s failed: %s", kind, error)
            self._watch_errors[kind] = str(error)
        self.metrics.degraded.labels("watch_error").set(1 if self._watch_errors else 0)

    def _remember(self, key: str) -> None:
        self._handled[key] = None
        self._handled.move_to_end(key)
        while len(self._handled) > 100_000:
            self._handled.popitem(last=False)

    def observe_pod(self, obj: Mapping[str, Any], initial: bool = False) -> None:
        """Count LeptonJob pods that got bound without the Lepton scheduler's say (fail-open).

        Seen pending, then bound, never asked about: kube-scheduler went on
        without us. On the first list after a start, a recently created bound
        pod with no ``LeptonScored`` event was placed while we were away.
        """
        metadata = obj.get("metadata") or {}
        if (obj.get("spec") or {}).get("nodeName"):  # bound: the cache now says where
            self.assumed.forget(str(metadata.get("uid") or ""))
        if not is_lepton_pod(metadata.get("labels"), metadata.get("annotations")):
            return
        key = f"{metadata.get('namespace')}/{metadata.get('name')}"
        if not (obj.get("spec") or {}).get("nodeName"):
            self._want_demand(metadata)
            if len(self._seen_pending) > 100_000:  # pods deleted unscheduled are never seen bound
                self._seen_pending.clear()
            self._seen_pending.add(key)
            return
        was_pending = key in self._seen_pending
        self._seen_pending.discard(key)
        uid = str(metadata.get("uid") or "")
        if key in self._handled:
            return
        if was_pending:
            self.metrics.unscored_pods.inc()
        elif initial and self.scored_before_start is not None:
            if uid in self.scored_before_start:
                return
            raw = metadata.get("creationTimestamp")
            try:
                created = parse_time(raw) if isinstance(raw, str) else None
            except ValueError:
                created = None
            if created and self.clock() - created < timedelta(hours=1):
                self.metrics.unscored_pods.inc()

    def _want_demand(self, metadata: Mapping[str, Any]) -> None:
        """A pending service pod: fetch its workload's forecasts before it is asked about."""
        if self.demands is None:
            return
        try:
            owner = owner_name(metadata)
            hints = hints_from_pod_metadata(
                metadata.get("labels"), metadata.get("annotations"), owner, metadata.get("name", "")
            )
        except HintError:
            return
        if hints is not None and hints.is_service:
            self.demands.want(str(metadata.get("namespace")), owner or hints.job_name)

    def forget_pod(self, obj: Mapping[str, Any]) -> None:
        """The watch saw a pod deleted: it counts for its siblings no more."""
        self.assumed.forget(str((obj.get("metadata") or {}).get("uid") or ""))

    # ------------------------------------------------------------------ decisions

    def _hints(self, args: ExtenderArgs) -> JobHints | None:
        try:
            hints = hints_from_pod_metadata(
                args.labels, args.annotations, args.owner_name, args.name
            )
        except HintError as error:
            raise ProtocolError(
                f"pod {args.namespace}/{args.name} has unreadable Lepton hints: {error}", 422
            ) from None
        if hints is None:
            return None
        if ANNOTATION_GPUS_PER_REPLICA not in args.annotations:
            # a Deployment's (StatefulSet's …) pod: the GPUs it requests, not a default of one
            spec = args.pod.get("spec")
            gpus = pod_gpus(spec) if isinstance(spec, Mapping) else 0
            hints = dataclasses.replace(hints, gpus_per_replica=gpus)
        work = hints.work_reference_gpu_hours
        if not math.isfinite(work) or work < 0:
            raise ProtocolError(
                f"pod {args.namespace}/{args.name}: annotation {ANNOTATION_WORK_GPU_HOURS}="
                f"{work!r} must be a finite, non-negative number of GPU-hours",
                422,
            )
        budget = args.labels.get(LABEL_BUDGET_NAME)
        if budget:
            pressure = self.cache.budget_pressure(args.namespace, budget)
            if pressure is not None:
                hints = dataclasses.replace(hints, budget_pressure=pressure)
        if self.demands is not None and hints.is_service:
            # Only what the background thread fetched: a workload not fetched yet (or a
            # Prometheus that cannot answer) keeps the hints the pod declared.
            hints, demand = self.demands.hints(
                args.namespace,
                args.name,
                args.owner_name or hints.job_name,
                hints,
                declared=ANNOTATION_REFERENCE_UTILIZATION_PERCENT in args.annotations,
            )
            key = f"{args.namespace}/{args.name}"
            if demand is not None:
                self._demand_notes[key] = demand.explain()
                self._demand_notes.move_to_end(key)
                while len(self._demand_notes) > DEMAND_NOTES_KEPT:
                    self._demand_notes.popitem(last=False)
            else:
                self._demand_notes.pop(key, None)
        return hints

    def _placed(self, args: ExtenderArgs, hints: JobHints) -> dict[str, int]:
        """The job's other pods per domain: those the cache has bound, and those assumed."""
        if not hints.spread_across:
            return {}
        bound = self.cache.placed_pods(args.namespace, hints.job_name, exclude_uid=args.uid)
        nodes = list(bound.values())
        nodes += self.assumed.nodes(args.namespace, hints.job_name, args.uid, known=bound.keys())
        return replicas_per_domain(nodes, self.cache.node_labels(nodes), hints.spread_across)

    def _generation(self) -> tuple[int, int]:
        return (self.cache.generation, self.assumed.version)

    def _pin(
        self, passed: CandidateTable, hints: JobHints, placed: Mapping[str, int], now: datetime
    ) -> tuple[ScoreResult, list[int], dict[str, str]]:
        """Scores of the passed nodes, the rows in the domain of the best one, and why the
        others are left out: kube-scheduler's pick then lands in the domain the siblings count."""
        key = hints.spread_across
        assert key
        scored = score_nodes(passed, hints, placed, now, self.config.scoring)
        scores = scored.score_list
        best = max(range(len(scores)), key=scores.__getitem__) if len(scores) else 0
        values, ids = passed.domain_ids(key)
        keep = ids == ids[best]
        domain = values[int(ids[best])]
        reason = (
            f"this replica goes to {key}={domain}, where its best node is: one domain per "
            "replica keeps maxReplicasPerDomain exact while its siblings are being bound"
        )
        out = {n: reason for n, k in zip(passed.names, keep.tolist(), strict=True) if not k}
        rows = [i for i, k in enumerate(keep.tolist()) if k]
        return scored, rows, out

    def filter(
        self, args: ExtenderArgs, watch: _Stopwatch | None = None
    ) -> tuple[dict[str, Any], str]:
        hints = self._hints(args)
        if hints is None:
            return encode_filter_result(args, args.node_names, {}, {}), "passthrough"
        if not self.synced:
            return encode_filter_result(args, args.node_names, {}, {}), "fail_open"
        key = f"{args.namespace}/{args.name}"
        self._remember(key)
        spread = (hints.spread_across,) if hints.spread_across else ()
        known, unknown = self.cache.table(args.node_names, spread)
        placed = self._placed(args, hints)
        if watch:
            watch.lap("table")
        now = self.clock()
        result = filter_nodes(known, hints, placed, now, self.config.scoring)
        passed = result.passed
        assert isinstance(passed, CandidateTable)
        # Failures a preemption could cure (too few free GPUs) go to FailedNodes; the rest
        # (wrong model, redundancy, deadline) cannot be fixed by evicting pods.
        failed = result.failed_of(FailureKind.RESOLVABLE)
        unresolvable = result.failed_of(FailureKind.UNRESOLVABLE)
        scored: ScoreResult | None = None
        rows: list[int] | None = None
        if hints.spread_across and len(passed):
            if hints.max_replicas_per_domain is not None:
                scored, rows, pinned_out = self._pin(passed, hints, placed, now)
                unresolvable.update(pinned_out)
                # nodes the cache does not know have no known domain: not for this job
                unresolvable.update(dict.fromkeys(unknown, UNKNOWN_DOMAIN))
                unknown = []
                best = self._best(scored)
                self.assumed.assume(args.namespace, hints.job_name, args.uid, passed.names[best])
            elif len(passed) == 1 and not unknown:  # kube-scheduler will not ask prioritize
                self.assumed.assume(args.namespace, hints.job_name, args.uid, passed.names[0])
        # unknown to the cache: fail open
        names = list(passed.names) + unknown if rows is None else [passed.names[r] for r in rows]
        if watch:
            watch.lap("scoring")
        if names and args.uid:
            self._computed[args.uid] = _Computation(
                tuple(names), self._generation(), hints, passed, unknown, placed, scored, rows
            )
            self._computed.move_to_end(args.uid)
            while len(self._computed) > COMPUTATIONS_KEPT:
                self._computed.popitem(last=False)
        outcome = "scored" if names else "no_fit"
        return encode_filter_result(args, names, failed, unresolvable), outcome

    def prioritize(self, args: ExtenderArgs, watch: _Stopwatch | None = None) -> tuple[bytes, str]:
        done = self._computed.pop(args.uid, None) if args.uid else None
        if (
            done is not None
            and done.names == args.node_names
            and done.generation == self._generation()
        ):
            self.metrics.reused.labels("hit").inc()
            hints, known, unknown, placed = done.hints, done.table, done.unknown, done.placed
            if done.scored is not None and done.rows is not None:  # scored by filter
                if watch:
                    watch.lap("table")
                return self._answer(args, hints, known, done.scored, done.rows, watch)
        else:
            parsed = self._hints(args)
            if parsed is None:
                return encode_host_priorities(
                    args.node_names, [0] * len(args.node_names)
                ), "passthrough"
            if not self.synced:
                scores = [0] * len(args.node_names)
                return encode_host_priorities(args.node_names, scores), "fail_open"
            self.metrics.reused.labels("miss").inc()
            hints = parsed
            spread = (hints.spread_across,) if hints.spread_across else ()
            known, unknown = self.cache.table(args.node_names, spread)
            placed = self._placed(args, hints)
        self._remember(f"{args.namespace}/{args.name}")
        if watch:
            watch.lap("table")
        result = score_nodes(known, hints, placed, self.clock(), self.config.scoring)
        return self._answer(args, hints, known, result, None, watch, by_name=bool(unknown))

    @staticmethod
    def _best(result: ScoreResult) -> int:
        """The row of the first best-scored node."""
        listed = result.score_list
        return max(range(len(listed)), key=listed.__getitem__)

    def _record(
        self,
        args: ExtenderArgs,
        hints: JobHints,
        known: CandidateTable,
        result: ScoreResult,
        watch: _Stopwatch | None,
    ) -> None:
        """The decision kept, its Event queued, the pick assumed."""
        if watch:
            watch.lap("scoring")
        key = f"{args.namespace}/{args.name}"
        now = self.clock()
        explanation = result.explanation
        note = self._demand_notes.get(key)
        if note is not None:
            explanation = dataclasses.replace(explanation, notes=(*explanation.notes, note))
        self._keep_decision(key, _Decision(explanation, now, len(known)))
        self.metrics.pods_scored.labels(str(hints.workload_kind)).inc()
        if watch:
            watch.lap("explanation")
        if self.recorder is not None:
            build = partial(_scored_event, args.namespace, args.name, args.uid, explanation, now)
            self.recorder.record(args.uid or key, build)
        if watch:
            watch.lap("event")
        if hints.spread_across and len(known):
            best = self._best(result)
            self.assumed.assume(args.namespace, hints.job_name, args.uid, known.names[best])

    def _answer(
        self,
        args: ExtenderArgs,
        hints: JobHints,
        known: CandidateTable,
        result: ScoreResult,
        rows: list[int] | None,
        watch: _Stopwatch | None,
        by_name: bool = False,
    ) -> tuple[bytes, str]:
        """The scores of the asked nodes: ``rows`` of ``result`` (all when None), or by name with
        0 for nodes the cache does not know; recorded as :meth:`_record` does."""
        self._record(args, hints, known, result, watch)
        listed = result.score_list
        if by_name:  # nodes the cache has not seen yet score 0, in the order asked
            scores = [result.scores.get(name, 0) for name in args.node_names]
        else:
            scores = list(listed) if rows is None else [listed[r] for r in rows]
        return encode_host_priorities(args.node_names, scores), "scored"

    def filter_best(
        self, args: ExtenderArgs, watch: _Stopwatch | None = None
    ) -> tuple[dict[str, Any], str]:
        """filter and prioritize in one call, for a profile with no ``prioritizeVerb``: of the
        nodes filter passes, only those with the best score (its ties; kube-scheduler's own
        scores choose among them). One HTTP round trip a pod instead of two. Nodes the cache
        does not know are kept only when it knows none (fail open); whole Nodes (no
        ``nodeCacheCapable``) get filter's answer as it is."""
        answer, outcome = self.filter(args, watch)
        done = self._computed.pop(args.uid, None) if args.uid else None
        if outcome != "scored" or done is None or args.nodes is not None:
            return answer, outcome
        known = done.table
        if done.scored is not None and done.rows is not None:  # held to one domain: scored
            result, rows = done.scored, done.rows
        else:
            result = score_nodes(known, done.hints, done.placed, self.clock(), self.config.scoring)
            rows = list(range(len(known)))
        self._record(args, done.hints, known, result, watch)
        listed = result.score_list
        if rows:
            top = max(listed[r] for r in rows)
            answer["NodeNames"] = [known.names[r] for r in rows if listed[r] == top]
        return answer, outcome

    def _keep_decision(self, key: str, decision: _Decision) -> None:
        old = self.decisions.pop(key, None)
        if old is not None:
            self._decision_rows -= old.rows
        self.decisions[key] = decision
        self._decision_rows += decision.rows
        while self.decisions and (
            len(self.decisions) > self.config.explanations_kept
            or self._decision_rows > self.config.explanation_rows_kept
        ):
            _, dropped = self.decisions.popitem(last=False)
            self._decision_rows -= dropped.rows

    def explain(self, pod: str) -> dict[str, Any]:
        namespace, sep, name = pod.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ProtocolError(f"pod={pod!r}: give the pod as NAMESPACE/NAME")
        decision = self.decisions.get(f"{namespace}/{name}")
        if decision is None:
            raise ProtocolError(
                f"no decision recorded for pod {namespace}/{name}: the Lepton scheduler has not "
                "scored it since it started (only LeptonJob pods are scored)",
                404,
            )
        body = decision.explanation.as_dict()
        body["pod"] = f"{namespace}/{name}"
        body["time"] = decision.time.isoformat()
        return body

    # ------------------------------------------------------------------ forecasts

    def refresh_forecasts(self, retrain: bool) -> None:
        """Fetch history, retrain when asked, publish each node's forecast to the cache."""
        if self.history is None:
            return
        end = self.clock()
        start = end - timedelta(seconds=self.config.history_seconds)
        try:
            history = self.history.node_utilization(start, end, self.config.predictor.step_seconds)
        except Exception as error:
            log.warning("no utilisation history, keeping the last forecasts: %s", error)
            self.metrics.degraded.labels("no_forecast").set(1)
            return
        if retrain:
            trained = self.predictor.fit(history)
            self.metrics.predictor_trainings.labels("trained" if trained else "too_short").inc()
        self.cache.set_forecasts(self.predictor.predict(history))
        self.metrics.degraded.labels("no_forecast").set(0)

    def forecast_loop(self) -> None:
        last_training = -float("inf")
        while not self.stop.is_set():
            now = time.monotonic()
            retrain = now - last_training >= self.config.retrain_interval_seconds
            try:
                self.refresh_forecasts(retrain)
            except Exception:
                log.exception("forecast refresh failed")
                self.metrics.predictor_trainings.labels("error").inc()
            if retrain:
                last_training = now
            self.stop.wait(self.config.forecast_interval_seconds)


def _scored_event(
    namespace: str, name: str, uid: str, explanation: Explanation, now: datetime
) -> dict[str, Any]:
    """The LeptonScored Event; built by the recorder's thread, off the request path."""
    return event_body(namespace, name, uid, event_message(explanation), now)


def event_message(explanation: Explanation, top: int = 3) -> str:
    """One line per top node with its terms, for a human reading ``kubectl describe pod``."""
    parts = [t.summary() for t in explanation.top(top)]
    head = f"{explanation.summary()}; top nodes: "
    return head + "; ".join(parts) if parts else head + "none"


# --------------------------------------------------------------------------- HTTP


def _json_error(status: int, message: str) -> web.Response:
    body: dict[str, Any] = {"Error": message}
    return web.json_response(body, status=status)


async def _read_args(request: web.Request, scheduler: Scheduler) -> ExtenderArgs:
    length = request.content_length
    if length is not None and length > scheduler.config.max_body_bytes:
        raise ProtocolError(
            f"request body of {length} bytes is over the "
            f"{scheduler.config.max_body_bytes} byte limit",
            413,
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(
            f"request body is over the {scheduler.config.max_body_bytes} byte limit", 413
        ) from None
    if not raw:
        raise ProtocolError("empty body: send ExtenderArgs as JSON")
    try:
        payload = loads(raw)
    except (ValueError, RecursionError) as error:
        raise ProtocolError(f"body is not valid JSON: {error}") from None
    return decode_extender_args(payload)


def _handler(verb: str) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        scheduler: Scheduler = request.app[SCHEDULER_KEY]
        started = time.perf_counter()
        watch = _Stopwatch(scheduler.metrics, verb, started)
        try:
            args = await _read_args(request, scheduler)
            watch.lap("decode")
            if verb == "filter":
                result, outcome = scheduler.filter(args, watch)
                body = dumps(result)
            elif verb == "filter-best":
                result, outcome = scheduler.filter_best(args, watch)
                body = dumps(result)
            else:
                body, outcome = scheduler.prioritize(args, watch)
            response = web.Response(body=body, content_type="application/json")
            watch.lap("encode")
        except ProtocolError as error:
            outcome = "invalid_hints" if error.status == 422 else "bad_request"
            response = _json_error(error.status, str(error))
        scheduler.metrics.decisions.labels(verb, outcome).inc()
        scheduler.metrics.request_seconds.labels(verb).observe(time.perf_counter() - started)
        return response

    return handle


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _readyz(request: web.Request) -> web.Response:
    scheduler: Scheduler = request.app[SCHEDULER_KEY]
    if scheduler.synced:
        return web.Response(text="ok")
    missing = [k for k in scheduler.require_sync if k not in scheduler.cache.synced]
    return web.Response(status=503, text=f"caches not synced yet: {', '.join(missing)}")


async def _metrics(request: web.Request) -> web.Response:
    scheduler: Scheduler = request.app[SCHEDULER_KEY]
    for kind, count in scheduler.cache.stats().items():
        scheduler.metrics.cache_objects.labels(kind).set(count)
    scheduler.metrics.assumed_pods.set(len(scheduler.assumed))
    scheduler.metrics.degraded.labels("cache_not_synced").set(0 if scheduler.synced else 1)
    return web.Response(
        body=generate_latest(scheduler.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


async def _explain(request: web.Request) -> web.Response:
    scheduler: Scheduler = request.app[SCHEDULER_KEY]
    pod = request.query.get("pod")
    if not pod:
        return _json_error(400, "give the pod to explain: /explain?pod=NAMESPACE/NAME")
    try:
        return web.json_response(scheduler.explain(pod))
    except ProtocolError as error:
        return _json_error(error.status, str(error))


SCHEDULER_KEY = web.AppKey("scheduler", Scheduler)


def build_app(
    cache: ClusterCache | None = None,
    *,
    config: SchedulerConfig | None = None,
    clock: Callable[[], datetime] | None = None,
    kube_api: Any = None,
    history: HistorySource | None = None,
) -> web.Application:
    """The Lepton scheduler as an aiohttp application.

    Without ``kube_api`` the cache is fed by the caller (tests, benchmarks) and
    the server is ready at once; with it, watches of Nodes, Pods and
    EnergyBudgets feed the cache, Events are recorded on pods, and the server
    is ready when the caches are synced. With ``history`` a background thread
    keeps each node's load forecast current; with a :class:`PrometheusHistory`
    another keeps services' workload forecasts, their demand (``u_ref``).
    """
    cache = cache if cache is not None else ClusterCache()
    config = config or SchedulerConfig()
    recorder = None
    require_sync: tuple[str, ...] = ()
    if kube_api is not None:
        from kubernetes import client

        core = client.CoreV1Api(kube_api)
        recorder = EventRecorder(
            lambda ns, body: core.create_namespaced_event(ns, body),
            rate=config.events_per_second,
            burst=int(2 * config.events_per_second),
        )
        require_sync = ("nodes", "pods")
    scheduler = Scheduler(
        cache,
        config=config,
        clock=clock or (lambda: datetime.now(UTC)),
        recorder=recorder,
        history=history,
        require_sync=require_sync,
    )
    if recorder is not None:
        recorder.on_drop = scheduler.metrics.events_dropped.inc
    if isinstance(history, PrometheusHistory):
        scheduler.demands = ServiceDemands(history, scheduler.predictor, config.history_seconds)
    # aiohttp answers 413 itself past client_max_size; _read_args words the message.
    app = web.Application(client_max_size=config.max_body_bytes)
    app[SCHEDULER_KEY] = scheduler
    app.router.add_post("/filter", _handler("filter"))
    app.router.add_post("/prioritize", _handler("prioritize"))
    app.router.add_post("/filter-best", _handler("filter-best"))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/explain", _explain)

    async def start_background(app: web.Application) -> None:
        if cache.nodes or cache.pods:  # filled by the caller
            scheduler.settle()
        if kube_api is not None:
            _start_watches(scheduler, kube_api)
        if history is not None:
            threading.Thread(target=scheduler.forecast_loop, name="forecast", daemon=True).start()
        if scheduler.demands is not None:
            threading.Thread(
                target=scheduler.demands.loop, args=(scheduler.stop,), name="demand", daemon=True
            ).start()

    async def stop_background(app: web.Application) -> None:
        scheduler.stop.set()
        if scheduler.demands is not None:
            scheduler.demands.wake.set()
        if scheduler.recorder is not None:
            scheduler.recorder.close()

    app.on_startup.append(start_background)
    app.on_cleanup.append(stop_background)
    return app


def _start_watches(scheduler: Scheduler, kube_api: Any) -> None:
    from kubernetes import client

    from .watch import Informer, kinds

    try:
        core = client.CoreV1Api(kube_api)
        events = core.list_event_for_all_namespaces(
            field_selector=f"reason={EVENT_REASON_SCORED}", _preload_content=False
        )
        items = json.loads(events.data).get("items") or []
        scheduler.scored_before_start = {
            str((e.get("involvedObject") or {}).get("uid")) for e in items
        }
    except Exception as error:  # best effort: only refines a metric
        log.info("could not list earlier %s events: %s", EVENT_REASON_SCORED, error)
    for kind in kinds(kube_api, scheduler.cache, scheduler.observe_pod, scheduler.forget_pod):
        Informer(kind, scheduler.stop, scheduler.watch_error).start()


def run(
    host: str,
    port: int,
    kubeconfig: str | None,
    prometheus_url: str | None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
) -> None:
    """Serve the Lepton scheduler until interrupted (``lepton scheduler``)."""
    from lepton.kube import api_client

    api = api_client(kubeconfig)
    history = PrometheusHistory(prometheus_url) if prometheus_url else None
    app = build_app(kube_api=api, history=history)
    context = None
    if tls_cert_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert_file, tls_key_file)
    web.run_app(app, host=host, port=port, ssl_context=context, access_log=None, print=None)
