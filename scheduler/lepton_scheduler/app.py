"""The scheduler extender: kube-scheduler's HTTP callout, answered by the core's scorer.

Endpoints:

* ``POST /filter`` and ``POST /prioritize`` — the extender protocol
  (:mod:`lepton_scheduler.protocol`). Pods that are not LeptonJob pods pass
  through untouched: every node passes, every score is equal.
* ``GET /healthz``, ``GET /readyz`` (ready once the watch caches are synced),
  ``GET /metrics`` (Prometheus), ``GET /explain?pod=NAMESPACE/NAME`` (the last
  decision for a pod, every term of every node).

This module translates and does I/O; every decision is
:func:`lepton.core.scoring.filter_nodes` / :func:`~lepton.core.scoring.score_nodes`,
the same functions the simulator calls.

One race needs care: kube-scheduler binds a pod asynchronously and may ask
about the job's next replica before the watch has seen the first one bound,
which would let two replicas into one domain. For jobs that spread, the
extender therefore waits (briefly, bounded) until the siblings it let through
are seen bound before filtering the next one.
"""

from __future__ import annotations

import asyncio
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
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lepton.core.hints import HintError, JobHints, hints_from_pod_metadata, is_lepton_pod
from lepton.core.names import ANNOTATION_WORK_GPU_HOURS
from lepton.core.names import EVENT_REASON_SCORED as EVENT_REASON
from lepton.core.predictor import HistorySource, LoadPredictor, PredictorConfig
from lepton.core.scoring import (
    DEFAULT_CONFIG,
    Explanation,
    ScoringConfig,
    filter_nodes,
    replicas_per_domain,
    score_nodes,
)

from .cache import ClusterCache
from .events import EventRecorder, event_body
from .metrics import ExtenderMetrics
from .protocol import (
    ExtenderArgs,
    ProtocolError,
    decode_extender_args,
    encode_filter_result,
    encode_host_priorities,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
# Failures a preemption could cure (too few free GPUs) go to FailedNodes; the rest
# (wrong model, redundancy, deadline) cannot be fixed by evicting pods.
RESOLVABLE_MARKER = "free GPUs"


@dataclass(frozen=True)
class ExtenderConfig:
    """How the extender behaves; the defaults are what ships."""

    max_body_bytes: int = MAX_BODY_BYTES
    sibling_wait_seconds: float = 1.0
    sibling_ttl_seconds: float = 3.0
    explanations_kept: int = 10_000
    forecast_interval_seconds: float = 60.0
    retrain_interval_seconds: float = 900.0
    history_seconds: float = 86_400.0
    scoring: ScoringConfig = DEFAULT_CONFIG
    predictor: PredictorConfig = field(default_factory=PredictorConfig)


@dataclass
class _Decision:
    explanation: Explanation
    time: datetime


class Extender:
    """State shared by the handlers: cache, metrics, last decisions, background work."""

    def __init__(
        self,
        cache: ClusterCache,
        *,
        config: ExtenderConfig | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recorder: EventRecorder | None = None,
        history: HistorySource | None = None,
        require_sync: tuple[str, ...] = (),
    ) -> None:
        self.cache = cache
        self.config = config or ExtenderConfig()
        self.clock = clock
        self.recorder = recorder
        self.history = history
        self.require_sync = require_sync
        self.metrics = ExtenderMetrics()
        self.decisions: OrderedDict[str, _Decision] = OrderedDict()
        self._in_flight: dict[tuple[str, str], dict[str, float]] = {}
        self._handled: OrderedDict[str, None] = OrderedDict()
        self._seen_pending: set[str] = set()
        # UIDs of pods scored by an earlier run (from its Events); None when unknown.
        self.scored_before_start: set[str] | None = None
        self._watch_errors: dict[str, str] = {}
        self.stop = threading.Event()
        self.predictor = LoadPredictor(self.config.predictor)
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
        """Count LeptonJob pods that got bound without the extender's say (fail-open).

        Seen pending, then bound, never asked about: kube-scheduler went on
        without us. On the first list after a start, a recently created bound
        pod with no ``LeptonScored`` event was placed while we were away.
        """
        metadata = obj.get("metadata") or {}
        if not is_lepton_pod(metadata.get("labels"), metadata.get("annotations")):
            return
        key = f"{metadata.get('namespace')}/{metadata.get('name')}"
        if not (obj.get("spec") or {}).get("nodeName"):
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
            created = _parse_time(metadata.get("creationTimestamp"))
            if created and self.clock() - created < timedelta(hours=1):
                self.metrics.unscored_pods.inc()

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
        work = hints.work_reference_gpu_hours
        if not math.isfinite(work) or work < 0:
            raise ProtocolError(
                f"pod {args.namespace}/{args.name}: annotation {ANNOTATION_WORK_GPU_HOURS}="
                f"{work!r} must be a finite, non-negative number of GPU-hours",
                422,
            )
        budget = args.labels.get("lepton.dev/budget-name")
        if budget:
            pressure = self.cache.budget_pressure(args.namespace, budget)
            if pressure is not None:
                hints = dataclasses.replace(hints, budget_pressure=pressure)
        return hints

    def _placed(self, args: ExtenderArgs, hints: JobHints) -> dict[str, int]:
        if not hints.spread_across:
            return {}
        nodes = self.cache.placed_nodes(args.namespace, hints.job_name, exclude_uid=args.uid)
        return replicas_per_domain(nodes, self.cache.node_labels(nodes), hints.spread_across)

    async def _await_siblings(self, args: ExtenderArgs, hints: JobHints) -> None:
        """Wait until the job's pods let through just before are seen bound (bounded)."""
        flights = self._in_flight.get((args.namespace, hints.job_name))
        if not flights:
            return
        deadline = time.monotonic() + self.config.sibling_wait_seconds
        me = f"{args.namespace}/{args.name}"
        while True:
            now = time.monotonic()
            for key, since in list(flights.items()):
                info = self.cache.pods.get(key)
                bound = info is not None and bool(info.node_name)
                if key == me or bound or now - since > self.config.sibling_ttl_seconds:
                    flights.pop(key, None)
            if not flights:
                self._in_flight.pop((args.namespace, hints.job_name), None)
                return
            if now >= deadline:
                return
            await asyncio.sleep(0.005)

    async def filter(self, args: ExtenderArgs) -> tuple[dict[str, Any], str]:
        hints = self._hints(args)
        if hints is None:
            return encode_filter_result(args, args.node_names, {}, {}), "passthrough"
        if not self.synced:
            return encode_filter_result(args, args.node_names, {}, {}), "fail_open"
        key = f"{args.namespace}/{args.name}"
        self._remember(key)
        if hints.spread_across:
            await self._await_siblings(args, hints)
        spread = (hints.spread_across,) if hints.spread_across else ()
        known, unknown = self.cache.table(args.node_names, spread)
        result = filter_nodes(
            known, hints, self._placed(args, hints), self.clock(), self.config.scoring
        )
        passed = result.passed_names + unknown  # unknown to the cache: fail open
        failed = {n: r for n, r in result.failed.items() if RESOLVABLE_MARKER in r}
        unresolvable = {n: r for n, r in result.failed.items() if RESOLVABLE_MARKER not in r}
        if passed and hints.spread_across:
            flights = self._in_flight.setdefault((args.namespace, hints.job_name), {})
            flights[key] = time.monotonic()
        outcome = "scored" if passed else "no_fit"
        return encode_filter_result(args, passed, failed, unresolvable), outcome

    def prioritize(self, args: ExtenderArgs) -> tuple[str, str]:
        hints = self._hints(args)
        if hints is None:
            return encode_host_priorities(
                args.node_names, [0] * len(args.node_names)
            ), "passthrough"
        if not self.synced:
            return encode_host_priorities(args.node_names, [0] * len(args.node_names)), "fail_open"
        key = f"{args.namespace}/{args.name}"
        self._remember(key)
        spread = (hints.spread_across,) if hints.spread_across else ()
        known, unknown = self.cache.table(args.node_names, spread)
        now = self.clock()
        result = score_nodes(known, hints, self._placed(args, hints), now, self.config.scoring)
        self.decisions[key] = _Decision(result.explanation, now)
        self.decisions.move_to_end(key)
        while len(self.decisions) > self.config.explanations_kept:
            self.decisions.popitem(last=False)
        if self.recorder is not None:
            self.recorder.record(
                event_body(args.namespace, args.name, args.uid, event_message(result.explanation))
            )
        if unknown:  # nodes the cache has not seen yet score 0, in the order asked
            scores = [result.scores.get(name, 0) for name in args.node_names]
        else:
            scores = list(result.score_list)
        return encode_host_priorities(args.node_names, scores), "scored"

    def explain(self, pod: str) -> dict[str, Any]:
        namespace, sep, name = pod.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ProtocolError(f"pod={pod!r}: give the pod as NAMESPACE/NAME")
        decision = self.decisions.get(f"{namespace}/{name}")
        if decision is None:
            raise ProtocolError(
                f"no decision recorded for pod {namespace}/{name}: the extender has not scored "
                "it since it started (only LeptonJob pods are scored)",
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


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def event_message(explanation: Explanation, top: int = 3) -> str:
    """One line per top node with its terms, for a human reading ``kubectl describe pod``."""
    parts = [t.summary() for t in explanation.top(top)]
    head = f"{explanation.summary()}; top nodes: "
    return head + "; ".join(parts) if parts else head + "none"


# --------------------------------------------------------------------------- HTTP


def _json_error(status: int, message: str) -> web.Response:
    body: dict[str, Any] = {"Error": message}
    return web.json_response(body, status=status)


async def _read_args(request: web.Request, extender: Extender) -> ExtenderArgs:
    length = request.content_length
    if length is not None and length > extender.config.max_body_bytes:
        raise ProtocolError(
            f"request body of {length} bytes is over the "
            f"{extender.config.max_body_bytes} byte limit",
            413,
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(
            f"request body is over the {extender.config.max_body_bytes} byte limit", 413
        ) from None
    if not raw:
        raise ProtocolError("empty body: send ExtenderArgs as JSON")
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ProtocolError(f"body is not valid JSON: {error}") from None
    return decode_extender_args(payload)


def _handler(verb: str) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        extender: Extender = request.app[EXTENDER_KEY]
        started = time.perf_counter()
        try:
            args = await _read_args(request, extender)
            if verb == "filter":
                result, outcome = await extender.filter(args)
                text = json.dumps(result, separators=(",", ":"))
            else:
                text, outcome = extender.prioritize(args)
            response = web.Response(text=text, content_type="application/json")
        except ProtocolError as error:
            outcome = "invalid_hints" if error.status == 422 else "bad_request"
            response = _json_error(error.status, str(error))
        extender.metrics.decisions.labels(verb, outcome).inc()
        extender.metrics.request_seconds.labels(verb).observe(time.perf_counter() - started)
        return response

    return handle


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _readyz(request: web.Request) -> web.Response:
    extender: Extender = request.app[EXTENDER_KEY]
    if extender.synced:
        return web.Response(text="ok")
    missing = [k for k in extender.require_sync if k not in extender.cache.synced]
    return web.Response(status=503, text=f"caches not synced yet: {', '.join(missing)}")


async def _metrics(request: web.Request) -> web.Response:
    extender: Extender = request.app[EXTENDER_KEY]
    for kind, count in extender.cache.stats().items():
        extender.metrics.cache_objects.labels(kind).set(count)
    extender.metrics.degraded.labels("cache_not_synced").set(0 if extender.synced else 1)
    return web.Response(
        body=generate_latest(extender.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


async def _explain(request: web.Request) -> web.Response:
    extender: Extender = request.app[EXTENDER_KEY]
    pod = request.query.get("pod")
    if not pod:
        return _json_error(400, "give the pod to explain: /explain?pod=NAMESPACE/NAME")
    try:
        return web.json_response(extender.explain(pod))
    except ProtocolError as error:
        return _json_error(error.status, str(error))


EXTENDER_KEY = web.AppKey("extender", Extender)


def build_app(
    cache: ClusterCache | None = None,
    *,
    config: ExtenderConfig | None = None,
    clock: Callable[[], datetime] | None = None,
    kube_api: Any = None,
    history: HistorySource | None = None,
) -> web.Application:
    """The extender as an aiohttp application.

    Without ``kube_api`` the cache is fed by the caller (tests, benchmarks) and
    the server is ready at once; with it, watches of Nodes, Pods and
    EnergyBudgets feed the cache, Events are recorded on pods, and the server
    is ready when the caches are synced. With ``history`` a background thread
    keeps each node's load forecast current.
    """
    cache = cache if cache is not None else ClusterCache()
    config = config or ExtenderConfig()
    recorder = None
    require_sync: tuple[str, ...] = ()
    if kube_api is not None:
        from kubernetes import client

        core = client.CoreV1Api(kube_api)
        recorder = EventRecorder(lambda ns, body: core.create_namespaced_event(ns, body))
        require_sync = ("nodes", "pods")
    extender = Extender(
        cache,
        config=config,
        clock=clock or (lambda: datetime.now(UTC)),
        recorder=recorder,
        history=history,
        require_sync=require_sync,
    )
    # aiohttp answers 413 itself past client_max_size; _read_args words the message.
    app = web.Application(client_max_size=config.max_body_bytes)
    app[EXTENDER_KEY] = extender
    app.router.add_post("/filter", _handler("filter"))
    app.router.add_post("/prioritize", _handler("prioritize"))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/explain", _explain)

    async def start_background(app: web.Application) -> None:
        if cache.nodes or cache.pods:  # filled by the caller
            extender.settle()
        if kube_api is not None:
            _start_watches(extender, kube_api)
        if history is not None:
            threading.Thread(target=extender.forecast_loop, name="forecast", daemon=True).start()

    async def stop_background(app: web.Application) -> None:
        extender.stop.set()
        if extender.recorder is not None:
            extender.recorder.close()

    app.on_startup.append(start_background)
    app.on_cleanup.append(stop_background)
    return app


def _start_watches(extender: Extender, kube_api: Any) -> None:
    from kubernetes import client

    from .watch import Informer, kinds

    try:
        core = client.CoreV1Api(kube_api)
        events = core.list_event_for_all_namespaces(
            field_selector=f"reason={EVENT_REASON}", _preload_content=False
        )
        items = json.loads(events.data).get("items") or []
        extender.scored_before_start = {
            str((e.get("involvedObject") or {}).get("uid")) for e in items
        }
    except Exception as error:  # best effort: only refines a metric
        log.info("could not list earlier %s events: %s", EVENT_REASON, error)
    for kind in kinds(kube_api, extender.cache, extender.observe_pod):
        Informer(kind, extender.stop, extender.watch_error).start()


def run(
    host: str,
    port: int,
    kubeconfig: str | None,
    prometheus_url: str | None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
) -> None:
    """Serve the extender until interrupted (``lepton scheduler``)."""
    from .history import PrometheusHistory
    from .watch import load_kube_config

    api = load_kube_config(kubeconfig)
    history = PrometheusHistory(prometheus_url) if prometheus_url else None
    app = build_app(kube_api=api, history=history)
    context = None
    if tls_cert_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert_file, tls_key_file)
    web.run_app(app, host=host, port=port, ssl_context=context, access_log=None, print=None)
