"""The Prometheus metrics the exporter serves, rendered from the accountant's snapshot.

A custom collector rather than library gauges: the series come and go with
GPUs and pods, and a scrape must see one consistent snapshot of the totals
(device = idle + pods + unattributed), never a half-updated one. Names sit
beside Kepler's and dcgm-exporter's (notes/energy-metering.md); every metric
is described in docs/metrics.md, and a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lepton_exporter.accounting import SOURCE_MIG_MODEL, Accountant
from lepton_exporter.procs import REASONS

GPU_LABELS = ["node", "gpu_uuid", "gpu_model", "source"]
POD_LABELS = [*GPU_LABELS, "namespace", "pod", "container"]
POD_ACTIVE_LABELS = [*POD_LABELS, "attribution"]
UNATTRIBUTED_LABELS = [*GPU_LABELS, "reason"]
MIG_LABELS = [*GPU_LABELS, "mig_uuid", "mig_profile"]

# name -> (type, help). The single list of what the exporter serves.
METRICS: dict[str, tuple[str, str]] = {
    "lepton_gpu_power_watts": ("gauge", "GPU board power draw (source=model: an estimate)."),
    "lepton_gpu_energy_joules_total": (
        "counter",
        "GPU energy since the exporter started: NVML's energy counter where the GPU has one, "
        "otherwise power integrated over time.",
    ),
    "lepton_gpu_idle_energy_joules_total": (
        "counter",
        "Part of the GPU's energy that its profile's idle power accounts for.",
    ),
    "lepton_gpu_unattributed_energy_joules_total": (
        "counter",
        "Active GPU energy no pod could be charged for, by reason (no pod holds the GPU, a "
        "process outside Kubernetes, an unresolved PID, a MIG slice with no pod, ...).",
    ),
    "lepton_gpu_unallocated_idle_energy_joules_total": (
        "counter",
        "Part of the GPU's idle energy no pod holds (no holder, free or unpartitioned MIG slices).",
    ),
    "lepton_pod_gpu_active_energy_joules_total": (
        "counter",
        "Active (above idle) GPU energy charged to a pod's container; a shared GPU is split "
        "by SM utilisation, memory or equally (attribution label), never copied.",
    ),
    "lepton_pod_gpu_idle_energy_joules_total": (
        "counter",
        "A pod's share of the GPU's idle energy, by allocation (replicas or MIG slice size).",
    ),
    "lepton_gpu_mig_energy_joules_total": (
        "counter",
        "A MIG device's share of its board's energy (source=mig_model: a model, NVML "
        "meters only the board).",
    ),
    "lepton_gpu_power_limit_watts": ("gauge", "GPU power limit in force."),
    "lepton_gpu_power_limit_min_watts": ("gauge", "Lowest power limit the GPU accepts."),
    "lepton_gpu_power_limit_max_watts": ("gauge", "Highest power limit the GPU accepts."),
    "lepton_gpu_power_limit_default_watts": ("gauge", "GPU's default power limit."),
    "lepton_gpu_power_cap_watts": (
        "gauge",
        "Power limit Lepton applied to the GPU and verified by reading it back.",
    ),
    "lepton_gpu_utilization_ratio": ("gauge", "Fraction of time a kernel ran on the GPU (0-1)."),
    "lepton_gpu_temperature_celsius": ("gauge", "GPU die temperature."),
    "lepton_gpu_sm_clock_hertz": ("gauge", "GPU SM clock."),
    "lepton_gpu_up": ("gauge", "1 when the GPU answered the last sample, 0 when it failed."),
    "lepton_cpu_energy_joules_total": (
        "counter",
        "CPU package or DRAM energy from RAPL, by zone, wraparound handled.",
    ),
    "lepton_exporter_device_errors_total": (
        "counter",
        "Failed meter reads, by device, call and error class.",
    ),
    "lepton_exporter_up": ("gauge", "1 when the backend could read its meters on the last sample."),
}

_GAUGE_FIELDS = {
    "lepton_gpu_power_watts": "power_watts",
    "lepton_gpu_power_limit_watts": "power_limit_watts",
    "lepton_gpu_power_limit_min_watts": "power_limit_min_watts",
    "lepton_gpu_power_limit_max_watts": "power_limit_max_watts",
    "lepton_gpu_power_limit_default_watts": "power_limit_default_watts",
    "lepton_gpu_utilization_ratio": "utilization_ratio",
    "lepton_gpu_temperature_celsius": "temperature_celsius",
    "lepton_gpu_sm_clock_hertz": "sm_clock_hertz",
}


def _name(metric: str) -> str:
    # prometheus_client appends "_total" to counters itself.
    return metric.removesuffix("_total")


def _counter(metric: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(_name(metric), METRICS[metric][1], labels=labels)


class LeptonCollector(Collector):
    """Renders one snapshot of the accountant per scrape."""

    def __init__(self, accountant: Accountant) -> None:
        self.accountant = accountant

    def collect(self) -> Iterator[Metric]:
        snapshot = self.accountant.snapshot()
        gauges = {
            name: GaugeMetricFamily(name, METRICS[name][1], labels=GPU_LABELS)
            for name in (*_GAUGE_FIELDS, "lepton_gpu_up", "lepton_gpu_power_cap_watts")
        }
        counters = {
            name: CounterMetricFamily(_name(name), METRICS[name][1], labels=GPU_LABELS)
            for name in (
                "lepton_gpu_energy_joules_total",
                "lepton_gpu_idle_energy_joules_total",
                "lepton_gpu_unallocated_idle_energy_joules_total",
            )
        }
        unattributed = _counter("lepton_gpu_unattributed_energy_joules_total", UNATTRIBUTED_LABELS)
        pods = _counter("lepton_pod_gpu_active_energy_joules_total", POD_ACTIVE_LABELS)
        pods_idle = _counter("lepton_pod_gpu_idle_energy_joules_total", POD_LABELS)
        mig = _counter("lepton_gpu_mig_energy_joules_total", MIG_LABELS)
        for gpu in snapshot.gpus:
            labels = [gpu.node, gpu.uuid, gpu.model, gpu.source]
            gauges["lepton_gpu_up"].add_metric(labels, 1.0 if gpu.up else 0.0)
            counters["lepton_gpu_energy_joules_total"].add_metric(labels, gpu.energy_joules_total)
            counters["lepton_gpu_idle_energy_joules_total"].add_metric(
                labels, gpu.idle_joules_total
            )
            counters["lepton_gpu_unallocated_idle_energy_joules_total"].add_metric(
                labels, gpu.unallocated_idle_joules_total
            )
            # Every reason from the start, at 0: rate() and dashboards need the series.
            for reason in REASONS:
                unattributed.add_metric(
                    [*labels, reason], gpu.unattributed_joules_total.get(reason, 0.0)
                )
            cap = snapshot.power_caps.get((gpu.node, gpu.uuid))
            if cap is not None:
                gauges["lepton_gpu_power_cap_watts"].add_metric(labels, cap)
            reading = gpu.reading
            if reading is not None:
                for name, attribute in _GAUGE_FIELDS.items():
                    value = getattr(reading, attribute)
                    if value is not None:
                        gauges[name].add_metric(labels, float(value))
            # What a MIG board's split attributes is a model: its source says so.
            split_labels = labels
            if gpu.mig_joules_total:
                split_labels = [gpu.node, gpu.uuid, gpu.model, SOURCE_MIG_MODEL]
            for (pod, method), joules in sorted(gpu.pod_active_joules_total.items()):
                pods.add_metric(
                    [*split_labels, pod.namespace, pod.pod, pod.container, method], joules
                )
            for pod, joules in sorted(gpu.pod_idle_joules_total.items()):
                pods_idle.add_metric([*split_labels, pod.namespace, pod.pod, pod.container], joules)
            mig_labels = [gpu.node, gpu.uuid, gpu.model, SOURCE_MIG_MODEL]
            for mig_uuid, (profile, joules) in sorted(gpu.mig_joules_total.items()):
                mig.add_metric([*mig_labels, mig_uuid, profile], joules)
        yield from gauges.values()
        yield from counters.values()
        yield unattributed
        yield pods
        yield pods_idle
        yield mig

        cpu = CounterMetricFamily(
            _name("lepton_cpu_energy_joules_total"),
            METRICS["lepton_cpu_energy_joules_total"][1],
            labels=["node", "zone", "source"],
        )
        for zone in snapshot.cpus:
            cpu.add_metric([zone.node, zone.zone, "rapl"], zone.energy_joules_total)
        yield cpu

        errors = CounterMetricFamily(
            _name("lepton_exporter_device_errors_total"),
            METRICS["lepton_exporter_device_errors_total"][1],
            labels=["node", "device", "source", "call", "error"],
        )
        for error, count in snapshot.errors.items():
            errors.add_metric(
                [error.node, error.device, error.source, error.call, error.error], count
            )
        yield errors

        up = GaugeMetricFamily(
            "lepton_exporter_up", METRICS["lepton_exporter_up"][1], labels=["node", "source"]
        )
        for (node, source), is_up in snapshot.up.items():
            up.add_metric([node, source], 1.0 if is_up else 0.0)
        yield up
