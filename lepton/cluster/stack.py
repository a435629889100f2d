"""Lepton's own components on the local control plane, as real processes.

The demo, the end-to-end tests and the benchmarks need the operator, the Lepton
scheduler (with the ``lepton-scheduler`` kube-scheduler profile), the
exporter's model backend for the kwok fleet and a real Prometheus scraping
them. Each runs as the user would run it — the ``lepton`` command or the
``prometheus`` binary — and is owned by the :class:`LocalCluster`, so
``lepton cluster down`` stops it with everything else.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from lepton.api import crd_dir
from lepton.cluster.local import ClusterError, LocalCluster
from lepton.cluster.processes import Process, free_port
from lepton.core.names import SCHEDULER_NAME

# The process of ``lepton scheduler``, the Lepton scheduler's server; the kube-scheduler that
# calls it is named after its profile (SCHEDULER_NAME), as in the chart.
SCHEDULER_SERVER = f"{SCHEDULER_NAME}-server"


def _lepton_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "lepton.cli", *args]


class LeptonStack:
    """Start and find Lepton's components on one local cluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def _url(self, name: str) -> str:
        proc = self.cluster.state.processes.get(name)
        if proc is None:
            raise ClusterError(f"{name} is not running on this cluster")
        return f"http://127.0.0.1:{proc.port}"

    @property
    def scheduler_url(self) -> str:
        return self._url(SCHEDULER_SERVER)

    @property
    def exporter_url(self) -> str:
        return self._url("lepton-exporter")

    @property
    def prometheus_url(self) -> str:
        return self._url("prometheus")

    def install_crds(self, crds_dir: Path | None = None) -> None:
        """Apply the CRDs (the package's, by default) and wait until the apiserver serves them."""
        crds_dir = crds_dir or crd_dir()
        files = sorted(crds_dir.glob("*.yaml"))
        if not files:
            raise ClusterError(
                f"no CRDs in {crds_dir}: generate them with `python -m lepton.api.crdgen`"
            )
        for path in files:
            self.cluster.kubectl("apply", "--server-side", "-f", str(path))
        names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in files]
        for name in names:
            self.cluster.kubectl(
                "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s", timeout=70
            )
        self.cluster.progress(f"[cluster] CRDs {', '.join(names)} established, from {crds_dir}")

    def start_scheduler(
        self, prometheus_url: str | None = None, port: int | None = None
    ) -> Process:
        """The Lepton scheduler (``lepton scheduler``) and the kube-scheduler profile calling it."""
        port = port or free_port()
        args = ["scheduler", "--host=127.0.0.1", f"--port={port}"]
        args.append(f"--kubeconfig={self.cluster.kubeconfig}")
        if prometheus_url:
            args.append(f"--prometheus-url={prometheus_url}")
        proc = self.cluster.spawn(
            SCHEDULER_SERVER, _lepton_argv(*args), port, f"http://127.0.0.1:{port}/readyz"
        )
        self.cluster.wait_healthy([SCHEDULER_SERVER])
        self.cluster.start_lepton_scheduler(f"http://127.0.0.1:{port}")
        return proc

    def start_exporter(
        self, interval_seconds: float = 2.0, time_compression: float = 1.0
    ) -> Process:
        """The exporter's model backend, serving the whole kwok fleet from one process."""
        port = free_port()
        argv = _lepton_argv(
            "exporter",
            "--backend=model",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--kubeconfig={self.cluster.kubeconfig}",
            "--podresources-socket=",
            f"--interval-seconds={interval_seconds}",
            f"--time-compression={time_compression}",
        )
        proc = self.cluster.spawn("lepton-exporter", argv, port, f"http://127.0.0.1:{port}/metrics")
        self.cluster.wait_healthy(["lepton-exporter"])
        return proc

    def start_prometheus(
        self, scrape_interval_seconds: int = 2, scheduler_port: int | None = None
    ) -> Process:
        """A real Prometheus scraping the exporter and the Lepton scheduler.

        ``scheduler_port`` names the Lepton scheduler's port before it starts (it reads
        its history from this Prometheus, so Prometheus comes first).
        """
        binary = shutil.which("prometheus")
        if binary is None:
            raise ClusterError(
                "prometheus is not installed: `apt-get install --no-install-recommends prometheus`"
            )
        targets = {
            job: [f"127.0.0.1:{self.cluster.state.processes[name].port}"]
            for job, name in (
                ("lepton-exporter", "lepton-exporter"),
                (SCHEDULER_SERVER, SCHEDULER_SERVER),
            )
            if name in self.cluster.state.processes
        }
        if scheduler_port is not None:
            targets[SCHEDULER_SERVER] = [f"127.0.0.1:{scheduler_port}"]
        config = {
            "global": {
                "scrape_interval": f"{scrape_interval_seconds}s",
                "evaluation_interval": f"{scrape_interval_seconds}s",
            },
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": addrs}]}
                for job, addrs in targets.items()
            ],
        }
        config_path = self.cluster.dir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        argv = [
            binary,
            f"--config.file={config_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={self.cluster.dir / 'prometheus'}",
            "--log.level=warn",
        ]
        proc = self.cluster.spawn("prometheus", argv, port, f"http://127.0.0.1:{port}/-/ready")
        self.cluster.wait_healthy(["prometheus"])
        return proc

    def start_operator(self, prometheus_url: str | None = None) -> Process:
        """The kopf operator, watching every namespace."""
        args = ["operator", f"--kubeconfig={self.cluster.kubeconfig}"]
        if prometheus_url:
            args.append(f"--prometheus-url={prometheus_url}")
        proc = self.cluster.spawn("lepton-operator", _lepton_argv(*args), 0, "")
        self.cluster.wait_healthy(["lepton-operator"])
        return proc

    def start_work_simulator(self, time_compression: float) -> Process:
        """Finish held LeptonJob pods when their work is done (see lepton.cluster.workload)."""
        argv = _lepton_argv(
            "cluster",
            "simulate-work",
            f"--kubeconfig={self.cluster.kubeconfig}",
            f"--time-compression={time_compression}",
        )
        proc = self.cluster.spawn("lepton-work-simulator", argv, 0, "")
        self.cluster.wait_healthy(["lepton-work-simulator"])
        return proc

    def start_all(self, time_compression: float | None = None) -> None:
        """CRDs, exporter, Lepton scheduler, Prometheus and the operator, in dependency order.

        With ``time_compression`` (for a cluster started with held LeptonJob pods), the
        work simulator finishes pods that many times faster than real time.
        """
        self.install_crds()
        if time_compression is not None:
            self.start_work_simulator(time_compression)
        self.start_exporter(time_compression=time_compression or 1.0)
        scheduler_port = free_port()
        self.start_prometheus(scheduler_port=scheduler_port)
        self.start_scheduler(self.prometheus_url, port=scheduler_port)
        self.start_operator(self.prometheus_url)
