"""The Lepton scheduler's Prometheus metrics, one registry per server so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lepton.core.hints import WorkloadKind
from lepton.core.names import EVENT_REASON_SCORED

# Latency goals are p99 <= 2 ms (1,000 nodes) and <= 10 ms (5,000 nodes): buckets around them.
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.0035, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)  # fmt: skip
# One stage of a request takes from microseconds to a few milliseconds.
PHASE_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01)
# The stages of a request, in order, as the phase label of lepton_scheduler_phase_duration_seconds:
# reading and decoding the body, the candidates' table from the cache, the filter or score,
# keeping the decision for /explain, queueing its Event, and writing the answer.
PHASES = ("decode", "table", "scoring", "explanation", "event", "encode")
VERBS = ("filter", "prioritize", "filter-best")


class SchedulerMetrics:
    """Latency per verb and stage, decisions by outcome, cache sizes and degraded mode."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "lepton_scheduler_request_duration_seconds",
            "Time to answer one request from kube-scheduler, by verb.",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.phase_seconds = Histogram(
            "lepton_scheduler_phase_duration_seconds",
            "Time spent in one stage of a request from kube-scheduler, by verb and phase (decode, "
            "table, scoring, explanation, event, encode).",
            ["verb", "phase"],
            buckets=PHASE_BUCKETS,
            registry=self.registry,
        )
        # bound once: a label lookup per observation would cost more than some stages
        self.phase = {
            (verb, phase): self.phase_seconds.labels(verb, phase)
            for verb in VERBS
            for phase in PHASES
        }
        self.reused = Counter(
            "lepton_scheduler_prioritize_reuse_total",
            "Prioritize calls answered from the computation of the same pod's filter call "
            "(result=hit) or computed afresh (miss: other nodes, or the cache changed between).",
            ["result"],
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "lepton_scheduler_events_dropped_total",
            f"{EVENT_REASON_SCORED} Events not posted: the queue was full, the rate limit was "
            "reached, or a later decision on the same pod superseded it.",
            registry=self.registry,
        )
        self.assumed_pods = Gauge(
            "lepton_scheduler_assumed_pods",
            "Pods the Lepton scheduler let through that count for their siblings until the watch "
            "sees them bound.",
            registry=self.registry,
        )
        self.decisions = Counter(
            "lepton_scheduler_decisions_total",
            "The Lepton scheduler's answers by verb and outcome (scored, passthrough, no_fit, "
            "bad_request, invalid_hints, fail_open).",
            ["verb", "outcome"],
            registry=self.registry,
        )
        # The label is the pod's lepton.dev/workload-kind (WorkloadKind: Batch, Service):
        # the same name and values as the annotation and the explanation's workloadKind.
        self.pods_scored = Counter(
            "lepton_scheduler_pods_scored_total",
            "Pods the Lepton scheduler scored (prioritize answers with Lepton's terms), by the "
            "workload kind they were scored as.",
            ["workload_kind"],
            registry=self.registry,
        )
        for kind in WorkloadKind:
            self.pods_scored.labels(str(kind))
        self.degraded = Gauge(
            "lepton_scheduler_degraded",
            "1 while the Lepton scheduler answers without its full inputs (reason: "
            "cache_not_synced, watch_error, no_forecast); pods are then placed fail-open.",
            ["reason"],
            registry=self.registry,
        )
        self.unscored_pods = Counter(
            "lepton_scheduler_pods_placed_unscored_total",
            "LeptonJob pods seen bound to a node without the Lepton scheduler having scored them "
            "(it was down, timed out or was skipped: kube-scheduler failed open).",
            registry=self.registry,
        )
        self.cache_objects = Gauge(
            "lepton_scheduler_cache_objects",
            "Objects in the Lepton scheduler's watch cache, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.predictor_trainings = Counter(
            "lepton_scheduler_predictor_trainings_total",
            "Background retrainings of the load predictor, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for reason in ("cache_not_synced", "watch_error", "no_forecast"):
            self.degraded.labels(reason).set(0)
