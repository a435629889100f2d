"""A real Kubernetes control plane on 127.0.0.1, for tests and the demo.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as
real processes on free loopback ports, from binaries built by
:mod:`lepton.cluster.tools`. kwok plays the kubelets of a fleet of fake GPU
nodes. A second kube-scheduler with the ``lepton-scheduler`` profile and
Lepton's extender stanza can be started and stopped on demand.

Everything the cluster owns lives in one state directory: certificates, the
kubeconfig, etcd's data, one log per component and ``state.json`` with the
PIDs, so that ``lepton cluster status`` and ``lepton cluster down`` work from
another process, and ``down`` kills exactly what ``up`` started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from lepton_scheduler.config import render_kube_scheduler_config

from lepton.cluster import certs, components, kwok, processes, tools
from lepton.cluster.fleet import DEFAULT_FLEET, Fleet, ready_node_names
from lepton.cluster.processes import Process, free_port, rss_bytes
from lepton.cluster.state import ClusterState, default_state_dir
from lepton.cluster.tools import ProgressFn
from lepton.core.errors import LeptonError
from lepton.core.names import SCHEDULER_NAME
from lepton.kube import api_client

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
HEALTH_TIMEOUT_SECONDS = 120.0


class ClusterError(LeptonError, RuntimeError):
    """The local control plane could not be started or reached; the message says why."""


def _quiet(_: str) -> None:
    pass


class LocalCluster:
    """A control plane rooted in one state directory."""

    def __init__(self, state_dir: Path | None = None, progress: ProgressFn = _quiet) -> None:
        self.dir = (state_dir or default_state_dir()).resolve()
        self.progress = progress
        self._state: ClusterState | None = None

    # --- paths and state ---------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def state(self) -> ClusterState:
        if self._state is None:
            if not self.state_path.exists():
                raise ClusterError(
                    f"no local cluster in {self.dir}: start one with `lepton cluster up`"
                )
            self._state = ClusterState.load(self.state_path)
        return self._state

    def _save(self) -> None:
        self.state.save(self.state_path)

    # --- lifecycle ---------------------------------------------------------

    def up(self, fleet: Fleet = DEFAULT_FLEET, hold_lepton_pods: bool = False) -> ClusterState:
        """Start every component, wait until all are healthy, and create the fleet.

        With ``hold_lepton_pods`` LeptonJob pods keep running until released by
        :mod:`lepton.cluster.workload` (which knows how long their work takes on the GPU
        they got); otherwise kwok completes every Job pod
        :data:`~lepton.cluster.kwok.JOB_POD_RUN_SECONDS` after it starts running.
        """
        if self.state_path.exists():
            existing = ClusterState.load(self.state_path)
            if any(p.alive() for p in existing.processes.values()):
                raise ClusterError(
                    f"a local cluster is already running from {self.dir}: "
                    "`lepton cluster down` first, or pass another --state-dir"
                )
            shutil.rmtree(self.dir)
        started = time.monotonic()
        binaries = {name: tools.tool_path(name) for name in ("etcd", "kwok", "kube-apiserver")}
        binaries["kube-controller-manager"] = tools.tool_path("kube-controller-manager")
        binaries["kube-scheduler"] = tools.tool_path("kube-scheduler")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir()
        self.progress(f"[cluster] certificates and kubeconfig in {self.dir}")
        cert_paths = certs.generate(self.dir / "pki")
        api_port = free_port()
        api_server = f"https://127.0.0.1:{api_port}"
        certs.write_kubeconfig(self.kubeconfig, cert_paths, api_server)
        self._state = ClusterState(kubeconfig=str(self.kubeconfig), api_server=api_server)
        self._save()
        try:
            self._start_etcd(binaries["etcd"])
            self._start_apiserver(binaries["kube-apiserver"], cert_paths, api_port)
            self.wait_healthy(["etcd", "kube-apiserver"])
            self._start_controller_manager(binaries["kube-controller-manager"], cert_paths)
            self._start_scheduler(binaries["kube-scheduler"])
            self._start_kwok(binaries["kwok"], hold_lepton_pods)
            self.wait_healthy(list(COMPONENTS))
            self._create_fleet(fleet)
            self.wait_for_default_service_account()
        except BaseException:
            self.progress("[cluster] start failed; stopping what was started")
            self.stop_processes()
            raise
        self.progress(
            f"[cluster] up in {time.monotonic() - started:.1f} s: {fleet.node_count} nodes Ready; "
            f"export KUBECONFIG={self.kubeconfig}"
        )
        return self.state

    def down(self) -> list[int]:
        """Stop every process ``up`` started and remove the state; returns the PIDs stopped."""
        if not self.state_path.exists():
            return []
        pids = self.stop_processes()
        shutil.rmtree(self.dir, ignore_errors=True)
        self._state = None
        return pids

    def stop_processes(self, names: list[str] | None = None) -> list[int]:
        """SIGTERM (then SIGKILL after 10 s) the named processes, or all; returns their PIDs."""
        state = self.state
        chosen = [p for n, p in state.processes.items() if names is None or n in names]
        processes.stop(chosen)
        for proc in chosen:
            del state.processes[proc.name]
        if self.state_path.exists():
            self._save()
        return [p.pid for p in chosen]

    def status(self) -> dict[str, dict[str, Any]]:
        """Each component's health, PID, port and resident memory."""
        report: dict[str, dict[str, Any]] = {}
        for name, proc in self.state.processes.items():
            alive = proc.alive()
            report[name] = {
                "healthy": alive and self._probe(proc.health_url),
                "running": alive,
                "pid": proc.pid,
                "port": proc.port,
                "rss_bytes": rss_bytes(proc.pid) if alive else 0,
                "log": proc.log_path,
            }
        return report

    # --- the second scheduler -------------------------------------------------

    def start_lepton_scheduler(self, scheduler_url: str) -> Process:
        """Start a kube-scheduler whose ``lepton-scheduler`` profile calls the Lepton scheduler."""
        if SCHEDULER_NAME in self.state.processes:
            self.stop_processes([SCHEDULER_NAME])
        config = render_kube_scheduler_config(scheduler_url, str(self.kubeconfig))
        config_path = self.dir / f"{SCHEDULER_NAME}.yaml"
        config_path.write_text(config)
        proc = self._start_scheduler(
            tools.tool_path("kube-scheduler"), name=SCHEDULER_NAME, config_path=config_path
        )
        self.wait_healthy([SCHEDULER_NAME])
        return proc

    def start_default_scheduler(self) -> Process:
        """(Re)start the cluster's own kube-scheduler, e.g. after stopping it in a benchmark."""
        if "kube-scheduler" in self.state.processes:
            self.stop_processes(["kube-scheduler"])
        proc = self._start_scheduler(tools.tool_path("kube-scheduler"))
        self.wait_healthy(["kube-scheduler"])
        return proc

    def start_scheduler_with(self, name: str, config: Mapping[str, Any]) -> Process:
        """Start one more kube-scheduler, ``name``, with a KubeSchedulerConfiguration.

        ``config``'s ``clientConnection`` and ``leaderElection`` are filled in as for
        the cluster's own scheduler; its profiles serve the pods that name them.
        """
        if name in self.state.processes:
            self.stop_processes([name])
        full = components.scheduler_config(self.kubeconfig, config)
        config_path = self.dir / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(full))
        proc = self._start_scheduler(
            tools.tool_path("kube-scheduler"), name=name, config_path=config_path
        )
        self.wait_healthy([name])
        return proc

    def stop_lepton_scheduler(self) -> None:
        if SCHEDULER_NAME in self.state.processes:
            self.stop_processes([SCHEDULER_NAME])

    # --- clients ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment for kubectl and clients: KUBECONFIG and the tools on PATH."""
        path_dirs = {str(tools.tool_path(n).parent) for n in ("kubectl", "helm", "kwok")}
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": os.pathsep.join([*sorted(path_dirs), os.environ.get("PATH", "")]),
        }

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's own kubectl against it."""
        argv = [str(tools.tool_path("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv, capture_output=True, text=True, input=input, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"`kubectl {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def spawn(
        self,
        name: str,
        argv: list[str],
        port: int,
        health_url: str,
        env: dict[str, str] | None = None,
    ) -> Process:
        """Start a process the cluster owns: `down` stops it; its log is logs/NAME.log.

        ``health_url`` empty means "healthy while running".
        """
        proc = processes.spawn(
            name, argv, port, health_url, self.dir / "logs" / f"{name}.log", self.dir, env
        )
        self.state.processes[name] = proc
        self._save()
        self.progress(f"[cluster] started {name} (pid {proc.pid}, port {port})")
        return proc

    def _start_etcd(self, binary: Path) -> None:
        client, peer = free_port(), free_port()
        argv = components.etcd_argv(binary, self.dir / "etcd", client, peer)
        self.spawn("etcd", argv, client, f"http://127.0.0.1:{client}/health")

    def _start_apiserver(self, binary: Path, c: certs.CertPaths, port: int) -> None:
        etcd = self.state.processes["etcd"]
        cert_dir = self.dir / "pki" / "apiserver"
        argv = components.apiserver_argv(binary, c, port, etcd.port, cert_dir)
        self.spawn("kube-apiserver", argv, port, f"https://127.0.0.1:{port}/readyz")

    def _start_controller_manager(self, binary: Path, c: certs.CertPaths) -> None:
        port = free_port()
        cert_dir = self.dir / "pki" / "controller-manager"
        argv = components.controller_manager_argv(binary, c, self.kubeconfig, port, cert_dir)
        self.spawn("kube-controller-manager", argv, port, f"https://127.0.0.1:{port}/healthz")

    def _start_scheduler(
        self, binary: Path, name: str = "kube-scheduler", config_path: Path | None = None
    ) -> Process:
        port = free_port()
        if config_path is None:
            config_path = self.dir / "kube-scheduler.yaml"
            config_path.write_text(yaml.safe_dump(components.scheduler_config(self.kubeconfig)))
        cert_dir = self.dir / "pki" / name
        argv = components.scheduler_argv(binary, config_path, self.kubeconfig, port, cert_dir)
        return self.spawn(name, argv, port, f"https://127.0.0.1:{port}/healthz")

    def _start_kwok(self, binary: Path, hold_lepton_pods: bool) -> None:
        port = free_port()
        stages_path = self.dir / "kwok-pod-stages.yaml"
        stages_path.write_text(kwok.pod_stages(hold_lepton_pods))
        argv = components.kwok_argv(binary, self.kubeconfig, port, stages_path)
        self.spawn("kwok", argv, port, f"http://127.0.0.1:{port}/healthz")

    # --- health ----------------------------------------------------------------

    def _probe(self, url: str) -> bool:
        if not url:
            return True
        context: ssl.SSLContext | None = None
        if url.startswith("https://"):
            if url.startswith(self.state.api_server):
                context = certs.client_ssl_context(certs.CertPaths.under(self.dir / "pki"))
            else:
                # Controller-manager and scheduler serve a self-signed certificate of their own.
                context = ssl._create_unverified_context()
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def wait_healthy(self, names: list[str], timeout: float = HEALTH_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for name in list(pending):
                proc = self.state.processes[name]
                if not proc.alive():
                    raise ClusterError(
                        f"{name} exited during start-up; its log is {proc.log_path}:\n"
                        + processes.log_tail(Path(proc.log_path))
                    )
                if self._probe(proc.health_url):
                    pending.remove(name)
                    self.progress(f"[cluster] {name} healthy")
            if pending and time.monotonic() > deadline:
                logs = ", ".join(self.state.processes[n].log_path for n in pending)
                raise ClusterError(
                    f"{', '.join(pending)} not healthy after {timeout:.0f} s; logs: {logs}"
                )
            if pending:
                time.sleep(0.2)

    def _api(self) -> Any:
        return api_client(str(self.kubeconfig))

    def _create_fleet(self, fleet: Fleet) -> None:
        from kubernetes import client

        api = client.CoreV1Api(self._api())
        nodes = fleet.nodes()
        self.progress(f"[cluster] creating {len(nodes)} kwok GPU nodes")
        for node in nodes:
            api.create_node(node)
        names = [n["metadata"]["name"] for n in nodes]
        self.state.fleet_nodes = names
        self._save()
        # kwok readies a few dozen nodes a second on a loaded machine: 2,000 took over 120 s
        timeout = HEALTH_TIMEOUT_SECONDS + 0.1 * len(names)
        deadline = time.monotonic() + timeout
        while True:
            ready = ready_node_names(api)
            missing = [n for n in names if n not in ready]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{len(missing)} kwok nodes not Ready after {timeout:.0f} s "
                    f"(e.g. {missing[:3]}); kwok's log: {self.state.processes['kwok'].log_path}"
                )
            time.sleep(0.5 if len(names) < 500 else 2.0)  # each look lists every node

    def wait_for_default_service_account(self, namespace: str = "default") -> None:
        """Return once ``namespace`` has its ``default`` ServiceAccount.

        Pods are rejected until kube-controller-manager has created it: callers wait here
        so that they can create pods at once.
        """
        from kubernetes import client

        api = client.CoreV1Api(self._api())
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if any(
                sa.metadata.name == "default"
                for sa in api.list_namespaced_service_account(namespace).items
            ):
                return
            time.sleep(0.2)
        raise ClusterError(
            f"the 'default' ServiceAccount of {namespace} never appeared: "
            "is kube-controller-manager healthy?"
        )

    def create_namespace(self, name: str) -> None:
        """Create namespace ``name`` and wait until pods can be created in it."""
        self.kubectl("create", "namespace", name)
        self.wait_for_default_service_account(name)


@contextlib.contextmanager
def running_cluster(state_dir: Path, fleet: Fleet = DEFAULT_FLEET) -> Iterator[LocalCluster]:
    """A cluster for the length of a ``with`` block."""
    cluster = LocalCluster(state_dir)
    cluster.up(fleet)
    try:
        yield cluster
    finally:
        cluster.down()
