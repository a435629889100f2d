"""Wires backends, accountant, power capper and the /metrics server: ``lepton exporter``.

Sampling runs on its own clock, apart from scrapes: energy integration and
pod attribution need regular samples whatever Prometheus' interval, and a
scrape then only renders a snapshot, so it stays cheap and never blocks on a
slow GPU or the kubelet.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, start_http_server

from lepton.core.errors import LeptonError
from lepton_exporter.accounting import Accountant, PidResolver
from lepton_exporter.metrics import LeptonCollector
from lepton_exporter.powercap import AnnotationsFor, PowerCapper
from lepton_exporter.readings import DeviceError, PodRef, Sample

log = logging.getLogger(__name__)

BACKENDS = ("nvml", "rapl", "model")


class ExporterConfigError(LeptonError, ValueError):
    """The exporter's options do not go together; the message names the option and the fix."""


class Backend(Protocol):
    """What the exporter needs of a backend."""

    source: str

    def read(self) -> Sample: ...


HoldersSource = Callable[[], Mapping[str, Sequence[PodRef]]]


@dataclass
class Exporter:
    """Samples every backend on an interval and folds the samples into the accountant."""

    backends: list[Backend]
    node: str
    accountant: Accountant = field(default_factory=Accountant)
    holders: HoldersSource | None = None
    resolve_pid: PidResolver | None = None
    capper: PowerCapper | None = None
    annotations_for: AnnotationsFor | None = None
    clock: Callable[[], float] = time.monotonic

    def sample_once(self) -> None:
        """One pass: read every backend, map GPUs to pods, account, apply caps."""
        holders: Mapping[str, Sequence[PodRef]] = {}
        if self.holders is not None:
            try:
                holders = self.holders()
            except Exception as error:  # the kubelet restarting must not stop metering
                log.warning("pod-resources unavailable: %s", error)
                self.accountant.count_error(
                    DeviceError(self.node, "kubelet", "podresources", "List", "unavailable")
                )
        for backend in self.backends:
            try:
                sample = backend.read()
            except Exception as error:  # a backend bug must not kill the other backends
                log.exception("backend %s failed", backend.source)
                sample = Sample(source=backend.source, up=False)
                sample.errors.append(
                    DeviceError(self.node, "", backend.source, "read", type(error).__name__)
                )
            self.accountant.record(sample, self.clock(), self.node, holders, self.resolve_pid)
            if self.capper is not None and self.annotations_for is not None and sample.gpus:
                self.capper.reconcile(sample.gpus, holders, self.annotations_for, self.accountant)

    def run(self, interval_seconds: float, stop: threading.Event) -> None:
        """Sample until ``stop`` is set, on a fixed cadence."""
        next_time = time.monotonic()
        while not stop.is_set():
            self.sample_once()
            next_time += interval_seconds
            stop.wait(max(next_time - time.monotonic(), 0.0))
        if self.capper is not None:
            self.capper.restore_all(self.accountant)

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LeptonCollector(self.accountant))
        return registry


def default_node_name() -> str:
    """The node's name: ``NODE_NAME`` (from the downward API), else the host name."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


def build_exporter(
    backend: str,
    node_name: str | None,
    kubeconfig: str | None,
    sysfs_root: str,
    podresources_socket: str | None,
    enable_power_capping: bool,
    nvml: Any = None,
    time_compression: float = 1.0,
    sharing_attribution: bool = False,
    proc_root: str = "/proc",
    dra: bool = False,
    api: Any = None,
) -> tuple[Exporter, list[Callable[[], None]]]:
    """The exporter for ``backend`` (one of BACKENDS, or several joined by commas).

    ``time_compression`` is for the simulated local cluster only: its work simulator runs
    GPU work N times faster than real time, so the model backend counts N seconds of energy
    per wall second. Real meters run on real time and refuse it.

    ``sharing_attribution`` maps the processes on a shared GPU to their pods through
    ``proc_root`` (the host's /proc: hostPID) and the pods on this node from the API
    server, so that a time-sliced or MPS GPU is split by what each pod ran; ``dra``
    maps DRA-claimed devices to GPUs through this node's ResourceSlices. ``api`` is
    a kubernetes ApiClient (default: from ``kubeconfig`` or in-cluster).

    Returns the exporter and the callables that stop what it started.
    """
    names = [b.strip() for b in backend.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown or not names:
        raise ExporterConfigError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if enable_power_capping and "nvml" not in names:
        raise ExporterConfigError(
            "--enable-power-capping needs the nvml backend: power limits are NVML's"
        )
    if time_compression != 1.0 and names != ["model"]:
        raise ExporterConfigError(
            "--time-compression applies to the model backend of a simulated cluster only: "
            "real meters run on real time"
        )
    if time_compression <= 0:
        raise ExporterConfigError(f"--time-compression must be positive, got {time_compression}")
    if (sharing_attribution or dra) and "nvml" not in names:
        raise ExporterConfigError(
            "--sharing-attribution and --dra need the nvml backend: they split real GPUs"
        )
    if dra and not podresources_socket:
        raise ExporterConfigError(
            "--dra reads the claims from the kubelet's pod-resources API: "
            "pass --podresources-socket too"
        )
    if sharing_attribution and not Path(proc_root).is_dir():
        raise ExporterConfigError(
            f"--proc-root {proc_root} is not a directory: sharing attribution reads the "
            "host's /proc (run the exporter with hostPID and mount /proc read-only)"
        )
    node = node_name or default_node_name()
    backends: list[Backend] = []
    stoppers: list[Callable[[], None]] = []
    watcher = None
    if "model" in names or enable_power_capping or sharing_attribution:
        from lepton.kube import api_client
        from lepton_exporter.kube import FleetWatcher

        if api is None:
            api = api_client(kubeconfig)
        # The model backend of the kwok fleet serves every node unless one is named;
        # sharing attribution needs only this node's pods, all of them (by UID).
        scope = node_name or (node if sharing_attribution and "model" not in names else None)
        watcher = FleetWatcher(api, scope, index_pods=sharing_attribution)
        watcher.start()
        watcher.synced.wait(timeout=30)
        stoppers.append(watcher.stop)
    exporter = Exporter(backends=backends, node=node)
    if time_compression != 1.0:
        origin = time.monotonic()
        exporter.clock = lambda: origin + (time.monotonic() - origin) * time_compression
    if "nvml" in names:
        from lepton.hw.nvml import import_nvml
        from lepton_exporter.nvml import NvmlBackend

        nvml_module = nvml if nvml is not None else import_nvml()
        nvml_backend = NvmlBackend(nvml_module, node)
        nvml_backend.start()
        stoppers.append(nvml_backend.stop)
        backends.append(nvml_backend)
        if enable_power_capping:
            assert watcher is not None
            fleet_watcher = watcher
            exporter.capper = PowerCapper(nvml_module, nvml_backend.handle_for_uuid, node)

            def annotations_for(pod: PodRef) -> Mapping[str, str]:
                for known in fleet_watcher.pods_on_node(node):
                    if (known.namespace, known.name) == (pod.namespace, pod.pod):
                        return known.annotations
                return {}

            exporter.annotations_for = annotations_for
    if "rapl" in names:
        from lepton.hw.rapl import powercap_dir
        from lepton_exporter.rapl import RaplBackend

        backends.append(RaplBackend(powercap_dir(sysfs_root), node))
    if "model" in names:
        from lepton_exporter.model import ModelBackend

        assert watcher is not None
        backends.append(ModelBackend(watcher.fleet, node_name))
    if sharing_attribution:
        from lepton_exporter.procs import ProcPodResolver

        assert watcher is not None
        exporter.resolve_pid = ProcPodResolver(watcher.container_for, proc_root).resolve
    if podresources_socket and "nvml" in names:
        # Only real GPUs are handed out by the kubelet; the model backend knows its pods.
        from lepton_exporter.podresources.client import PodResourcesClient, uuid_in_device_name

        dra_uuid = uuid_in_device_name
        if dra:
            from lepton.kube import api_client
            from lepton_exporter.kube import ResourceSliceIndex

            slices = ResourceSliceIndex(api if api is not None else api_client(kubeconfig), node)
            slices.start()
            stoppers.append(slices.stop)
            dra_uuid = slices.uuid
        podresources = PodResourcesClient(podresources_socket, dra_uuid=dra_uuid)
        exporter.holders = podresources.gpu_holders
        stoppers.append(podresources.close)
    return exporter, stoppers


def run(
    *,
    backend: str,
    host: str,
    port: int,
    node_name: str | None,
    kubeconfig: str | None,
    sysfs_root: str,
    podresources_socket: str | None,
    enable_power_capping: bool,
    interval_seconds: float,
    time_compression: float = 1.0,
    sharing_attribution: bool = False,
    proc_root: str = "/proc",
    dra: bool = False,
) -> None:
    """Serve /metrics on host:port until interrupted (blocking)."""
    exporter, stoppers = build_exporter(
        backend,
        node_name,
        kubeconfig,
        sysfs_root,
        podresources_socket,
        enable_power_capping,
        time_compression=time_compression,
        sharing_attribution=sharing_attribution,
        proc_root=proc_root,
        dra=dra,
    )
    server, _ = start_http_server(port, addr=host, registry=exporter.registry())
    log.info("exporter serving", extra={"host": host, "port": port, "backend": backend})
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        # The kubelet stops a DaemonSet pod with SIGTERM: leave the loop so that
        # the power limits Lepton set are restored before the process exits.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        exporter.run(interval_seconds, stop)
    except KeyboardInterrupt:
        stop.set()
        if exporter.capper is not None:
            exporter.capper.restore_all(exporter.accountant)
    finally:
        server.shutdown()
        for stopper in stoppers:
            stopper()
