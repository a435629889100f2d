"""The extender's Prometheus metrics, one registry per server so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency goals are p99 <= 5 ms (1,000 nodes) and <= 25 ms (5,000 nodes): buckets around them.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ExtenderMetrics:
    """Latency per verb, decisions by outcome, cache sizes and degraded mode."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "lepton_scheduler_request_duration_seconds",
            "Time to answer one extender request, by verb.",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "lepton_scheduler_decisions_total",
            "Extender answers by verb and outcome (scored, passthrough, no_fit, bad_request, "
            "invalid_hints, fail_open).",
            ["verb", "outcome"],
            registry=self.registry,
        )
        self.degraded = Gauge(
            "lepton_scheduler_degraded",
            "1 while the extender answers without its full inputs (reason: cache_not_synced, "
            "watch_error, no_forecast); pods are then placed fail-open.",
            ["reason"],
            registry=self.registry,
        )
        self.unscored_pods = Counter(
            "lepton_scheduler_pods_placed_without_extender_total",
            "LeptonJob pods seen bound to a node without the extender having scored them "
            "(the extender was down, timed out or was skipped: kube-scheduler failed open).",
            registry=self.registry,
        )
        self.cache_objects = Gauge(
            "lepton_scheduler_cache_objects",
            "Objects in the extender's watch cache, by kind.",
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
