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

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from lepton_scheduler.config import render_kube_scheduler_config

from lepton.cluster import certs, tools
from lepton.cluster.fleet import DEFAULT_FLEET, TAINT_KWOK, Fleet
from lepton.core.errors import LeptonError
from lepton.core.names import LABEL_JOB_NAME, SCHEDULER_NAME

log = logging.getLogger(__name__)

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
HEALTH_TIMEOUT_SECONDS = 120.0


class ClusterError(LeptonError, RuntimeError):
    """The local control plane could not be started or reached; the message says why."""


def default_state_dir() -> Path:
    """Where ``lepton cluster`` keeps its state unless told otherwise."""
    env = os.environ.get("LEPTON_CLUSTER_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / "lepton-cluster"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Counted after the parenthesised command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()


def _process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks, to tell it from a later process with its PID."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])  # field 22


def pid_running(pid: int) -> bool:
    """A process with this PID exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used, or None when there is no such process."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14 and 15


def rss_bytes(pid: int | str = "self") -> int:
    """A process's resident memory (``/proc/PID/status`` VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Process:
    """One component the cluster started."""

    name: str
    pid: int
    start_ticks: int | None
    port: int
    health_url: str
    log_path: str

    def alive(self) -> bool:
        # One read of /proc: the process may exit between two.
        fields = _stat_fields(self.pid)
        return fields is not None and int(fields[19]) == self.start_ticks and fields[0] != "Z"


@dataclass
class ClusterState:
    """What ``state.json`` records."""

    kubeconfig: str
    api_server: str
    processes: dict[str, Process] = field(default_factory=dict)
    fleet_nodes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        data = json.loads(path.read_text())
        processes = {k: Process(**v) for k, v in data.pop("processes").items()}
        return cls(processes=processes, **data)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


ProgressFn = Callable[[str], None]


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
        they got); otherwise kwok completes every Job pod :data:`JOB_POD_RUN_SECONDS` after
        it starts running.
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
        self._write_kubeconfig(cert_paths, api_server)
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
        for proc in chosen:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in chosen:
            while proc.alive() and time.monotonic() < deadline:
                _reap(proc.pid)
                time.sleep(0.05)
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                while proc.alive():
                    _reap(proc.pid)
                    time.sleep(0.05)
            _reap(proc.pid)
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
        full = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            **config,
            "clientConnection": {"kubeconfig": str(self.kubeconfig), "qps": 200, "burst": 400},
            "leaderElection": {"leaderElect": False},
        }
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

    def submit_concurrently(
        self, verb: list[str], objects: list[dict[str, Any]], clients: int = 8
    ) -> None:
        """``kubectl VERB -f -`` of ``objects`` from several clients at once, as a burst from a
        pipeline would arrive (one kubectl sends its objects one by one)."""
        chunks = [objects[i::clients] for i in range(clients)]
        with ThreadPoolExecutor(clients) as pool:
            list(
                pool.map(
                    lambda chunk: self.kubectl(
                        *verb,
                        "-f",
                        "-",
                        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": chunk}),
                        timeout=600,
                    ),
                    [c for c in chunks if c],
                )
            )

    # --- internals -------------------------------------------------------------

    def _write_kubeconfig(self, c: certs.CertPaths, server: str) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "lepton-local",
                    "cluster": {"server": server, "certificate-authority-data": b64(c.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "lepton-admin",
                    "user": {
                        "client-certificate-data": b64(c.admin_cert),
                        "client-key-data": b64(c.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "lepton-local",
                    "context": {"cluster": "lepton-local", "user": "lepton-admin"},
                }
            ],
            "current-context": "lepton-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

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
        log_path = self.dir / "logs" / f"{name}.log"
        with log_path.open("ab") as log_file:
            popen = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.dir,
                env=env,
            )
        proc = Process(
            name=name,
            pid=popen.pid,
            start_ticks=_process_start_ticks(popen.pid),
            port=port,
            health_url=health_url,
            log_path=str(log_path),
        )
        # The Popen object is dropped on purpose: the process outlives this call (and, for
        # `lepton cluster up`, this Python process); it is stopped by PID from state.json.
        popen.returncode = 0
        self.state.processes[name] = proc
        self._save()
        self.progress(f"[cluster] started {name} (pid {proc.pid}, port {port})")
        return proc

    def _start_etcd(self, binary: Path) -> None:
        client, peer = free_port(), free_port()
        data = self.dir / "etcd"
        self.spawn(
            "etcd",
            [
                str(binary),
                "--name=lepton",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=lepton=http://127.0.0.1:{peer}",
                # Throwaway data: fsync buys nothing and costs seconds (envtest does the same).
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                "--quota-backend-bytes=8589934592",
            ],
            client,
            f"http://127.0.0.1:{client}/health",
        )

    def _start_apiserver(self, binary: Path, c: certs.CertPaths, port: int) -> None:
        etcd = self.state.processes["etcd"]
        self.spawn(
            "kube-apiserver",
            [
                str(binary),
                f"--etcd-servers=http://127.0.0.1:{etcd.port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.dir / 'pki' / 'apiserver'}",
                f"--tls-cert-file={c.serving_cert}",
                f"--tls-private-key-file={c.serving_key}",
                f"--client-ca-file={c.ca_cert}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                f"--service-account-issuer=https://127.0.0.1:{port}",
                f"--service-account-key-file={c.service_account_pub}",
                f"--service-account-signing-key-file={c.service_account_key}",
                "--endpoint-reconciler-type=none",
                # As kwokctl does for load tests: no request throttling on a test cluster.
                "--max-requests-inflight=0",
                "--max-mutating-requests-inflight=0",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ],
            port,
            f"https://127.0.0.1:{port}/readyz",
        )

    def _component_auth_flags(self) -> list[str]:
        kc = str(self.kubeconfig)
        return [
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        ]

    def _start_controller_manager(self, binary: Path, c: certs.CertPaths) -> None:
        port = free_port()
        self.spawn(
            "kube-controller-manager",
            [
                str(binary),
                f"--kubeconfig={self.kubeconfig}",
                *self._component_auth_flags(),
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.dir / 'pki' / 'controller-manager'}",
                f"--root-ca-file={c.ca_cert}",
                f"--service-account-private-key-file={c.service_account_key}",
                f"--cluster-signing-cert-file={c.ca_cert}",
                f"--cluster-signing-key-file={c.ca_key}",
                "--leader-elect=false",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--concurrent-job-syncs=20",
            ],
            port,
            f"https://127.0.0.1:{port}/healthz",
        )

    def _start_scheduler(
        self, binary: Path, name: str = "kube-scheduler", config_path: Path | None = None
    ) -> Process:
        port = free_port()
        if config_path is None:
            config_path = self.dir / "kube-scheduler.yaml"
            config_path.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kubescheduler.config.k8s.io/v1",
                        "kind": "KubeSchedulerConfiguration",
                        "clientConnection": {
                            "kubeconfig": str(self.kubeconfig),
                            "qps": 200,
                            "burst": 400,
                        },
                        "leaderElection": {"leaderElect": False},
                    }
                )
            )
        return self.spawn(
            name,
            [
                str(binary),
                f"--config={config_path}",
                *self._component_auth_flags(),
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.dir / 'pki' / name}",
            ],
            port,
            f"https://127.0.0.1:{port}/healthz",
        )

    def _start_kwok(self, binary: Path, hold_lepton_pods: bool) -> None:
        port = free_port()
        stages_path = self.dir / "kwok-pod-stages.yaml"
        stages_path.write_text(kwok_pod_stages(hold_lepton_pods))
        self.spawn(
            "kwok",
            [
                str(binary),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.0.0.0/16",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{port}",
                f"--config={stages_path}",
            ],
            port,
            f"http://127.0.0.1:{port}/healthz",
        )

    def _ssl_context(self) -> ssl.SSLContext:
        pki = self.dir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _probe(self, url: str) -> bool:
        if not url:
            return True
        context: ssl.SSLContext | None = None
        if url.startswith("https://"):
            if url.startswith(self.state.api_server):
                context = self._ssl_context()
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
                        + _tail(Path(proc.log_path))
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
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

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
            ready = {
                n.metadata.name
                for n in api.list_node().items
                if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                and not any(t.key == TAINT_KWOK for t in n.spec.taints or [])
            }
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


# A Job pod on kwok runs this long unless held for the work simulator: long enough for the
# Job's start and completion times (whole seconds) to differ, so run time is never zero.
JOB_POD_RUN_SECONDS = 2.0
_HELD_STAGE = "lepton-pod-complete-when-released"
_LEPTON_POD_KEY = f'.metadata.labels["{LABEL_JOB_NAME}"]'


def kwok_pod_stages(hold_lepton_pods: bool) -> str:
    """kwok's pod stages for this cluster, from ``data/kwok-pod-stages.yaml``.

    Without holding, LeptonJob pods complete like any Job pod (no work simulator needed).
    """
    text = resources.files("lepton.cluster").joinpath("data/kwok-pod-stages.yaml").read_text()
    stages = [s for s in yaml.safe_load_all(text) if s]
    if not hold_lepton_pods:
        stages = [s for s in stages if s["metadata"]["name"] != _HELD_STAGE]
    for stage in stages:
        if stage["metadata"]["name"] != "pod-complete":
            continue
        stage["spec"]["delay"] = {"durationMilliseconds": int(JOB_POD_RUN_SECONDS * 1000)}
        if not hold_lepton_pods:
            selector = stage["spec"]["selector"]
            selector["matchExpressions"] = [
                e for e in selector["matchExpressions"] if e["key"] != _LEPTON_POD_KEY
            ]
    return yaml.safe_dump_all(stages, sort_keys=False)


def _reap(pid: int) -> None:
    # Processes started by this Python process become zombies until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running_cluster(state_dir: Path, fleet: Fleet = DEFAULT_FLEET) -> Iterator[LocalCluster]:
    """A cluster for the length of a ``with`` block."""
    cluster = LocalCluster(state_dir)
    cluster.up(fleet)
    try:
        yield cluster
    finally:
        cluster.down()
