"""The ``lepton`` command: one entry point for every component and tool.

Each subcommand imports its component lazily, so that ``lepton --help`` and
``lepton cluster status`` stay fast and a node running the exporter never
imports the operator.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from lepton import __version__
from lepton.core.errors import LeptonError
from lepton.core.names import SCHEDULER_NAME


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: easy to grep, and what log collectors expect."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(verbose: int) -> None:
    # Quiet by default: warnings and errors only.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), handlers=[handler])


class TraceFile(click.Path):
    """A trace CSV: a path, or the bare name of a trace shipped in ``lepton/data/traces``
    (``openb_pod_list_gpushare20.csv``), so that an installed package reaches its own data."""

    def __init__(self) -> None:
        super().__init__(path_type=Path, exists=True, dir_okay=False)

    def convert(
        self,
        value: str | os.PathLike[str],
        param: click.Parameter | None,
        ctx: click.Context | None,
    ) -> str | bytes | os.PathLike[str]:
        from lepton.data import data_file

        path = Path(value)
        shipped = data_file(f"traces/{path.name}")
        if not path.exists() and str(path) == path.name and shipped.is_file():
            return shipped
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            names = sorted(p.name for p in shipped.parent.glob("*.csv"))
            self.fail(
                f"{value}: no such file, nor a shipped trace ({', '.join(names) or 'none'})",
                param,
                ctx,
            )


def _progress(message: str) -> None:
    click.echo(message, err=True)


class LeptonGroup(click.Group):
    """The ``lepton`` command: a :class:`LeptonError` raised anywhere below becomes its message
    and exit code 1 here, the one place errors meet the user (others keep their traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LeptonError as error:
            raise click.ClickException(str(error)) from None  # "Error: ...", exit code 1


@click.group(cls=LeptonGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lepton")
@click.option("-v", "--verbose", count=True, help="More logs (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Lepton: energy-aware scheduling for Kubernetes GPU clusters."""
    _setup_logging(verbose)


# --- tools -------------------------------------------------------------------


@main.group()
def tools() -> None:
    """Build the upstream Kubernetes tools the local control plane runs."""


@tools.command("build")
@click.option(
    "--only",
    type=click.Choice(["etcd", "kwok", "kubernetes", "helm"]),
    multiple=True,
    help="Build only these groups (default: all).",
)
def tools_build(only: tuple[str, ...]) -> None:
    """Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and
    helm from their Go modules at pinned versions into the cache (a no-op when cached)."""
    from lepton.cluster import tools as t

    t.build_all(only or ("etcd", "kwok", "kubernetes", "helm"), progress=_progress)
    for tool in t.TOOLS.values():
        click.echo(f"{tool.name:<24} {tool.version:<9} {tool.path}")


@tools.command("path")
@click.argument("name")
def tools_path(name: str) -> None:
    """Print the cached binary's path for NAME (e.g. kubectl)."""
    from lepton.cluster import tools as t

    if name not in t.TOOLS:
        raise click.BadParameter(f"unknown tool {name!r}; one of {', '.join(t.TOOLS)}")
    click.echo(t.tool_path(name))


# --- cluster -----------------------------------------------------------------

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the cluster keeps certificates, logs and PIDs "
    "(default: $LEPTON_CLUSTER_DIR or $XDG_RUNTIME_DIR/lepton-cluster).",
)


@main.group()
def cluster() -> None:
    """A real local control plane on 127.0.0.1 with fake GPU nodes (kwok)."""


@cluster.command("up")
@state_dir_option
@click.option(
    "--fleet",
    "fleet_file",
    type=TraceFile(),
    help="A fleet YAML file, or a trace node list (.csv): a path, or the name of the shipped "
    "openb_node_list_gpu_node.csv.",
)
@click.option(
    "--fleet-limit", type=int, default=None, help="Use only the first N nodes of a .csv fleet."
)
@click.option(
    "--scheduler-url",
    default=None,
    help=f"Also start a second kube-scheduler, profile {SCHEDULER_NAME}, calling the Lepton "
    "scheduler at this URL.",
)
@click.option("--build/--no-build", default=True, help="Build missing tools first (default: yes).")
@click.option(
    "--crds/--no-crds",
    default=True,
    help="Install Lepton's CRDs, shipped in the package, once it is up (default: yes).",
)
def cluster_up(
    state_dir: Path | None,
    fleet_file: Path | None,
    fleet_limit: int | None,
    scheduler_url: str | None,
    build: bool,
    crds: bool,
) -> None:
    """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, create
    the GPU fleet and install the CRDs; prints the kubeconfig path when everything is healthy."""
    from lepton.cluster import tools as t
    from lepton.cluster.fleet import DEFAULT_FLEET, load_fleet
    from lepton.cluster.local import LocalCluster
    from lepton.cluster.stack import LeptonStack

    if build:
        t.build_all(("etcd", "kwok", "kubernetes"), progress=_progress)
    fleet = load_fleet(fleet_file, limit=fleet_limit) if fleet_file else DEFAULT_FLEET
    local = LocalCluster(state_dir, progress=_progress)
    local.up(fleet)
    if crds:
        LeptonStack(local).install_crds()
    if scheduler_url:
        local.start_lepton_scheduler(scheduler_url)
    click.echo(local.kubeconfig)


@cluster.command("down")
@state_dir_option
def cluster_down(state_dir: Path | None) -> None:
    """Stop every process `up` started and remove the cluster's state."""
    from lepton.cluster.local import LocalCluster

    pids = LocalCluster(state_dir).down()
    click.echo(f"stopped {len(pids)} processes" if pids else "no local cluster was running")


@cluster.command("status")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cluster_status(state_dir: Path | None, as_json: bool) -> None:
    """Each component's health, PID, port and memory; exits 1 when one is unhealthy."""
    from lepton.cluster.local import LocalCluster

    report = LocalCluster(state_dir).status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{'COMPONENT':<26}{'HEALTHY':<9}{'PID':<9}{'PORT':<7}{'RSS':>9}")
        for name, row in report.items():
            rss = f"{row['rss_bytes'] / 2**20:.0f} MiB"
            healthy = "yes" if row["healthy"] else "NO"
            click.echo(f"{name:<26}{healthy:<9}{row['pid']:<9}{row['port']:<7}{rss:>9}")
        total = sum(r["rss_bytes"] for r in report.values()) / 2**20
        click.echo(f"{'total':<51}{total:>6.0f} MiB")
    if not all(r["healthy"] for r in report.values()):
        sys.exit(1)


@cluster.command("simulate-work")
@click.option(
    "--kubeconfig", envvar="KUBECONFIG", required=True, help="The local cluster's kubeconfig."
)
@click.option(
    "--time-compression",
    default=360.0,
    show_default=True,
    type=float,
    help="Simulated seconds per wall second (360: an hour of GPU work runs in 10 s).",
)
def cluster_simulate_work(kubeconfig: str, time_compression: float) -> None:
    """Finish LeptonJob pods on kwok nodes when their work is done at their GPU's speed
    (needs a cluster started with held LeptonJob pods, as the demo does)."""
    from lepton.cluster.workload import run

    run(kubeconfig, time_compression)


@cluster.command("kubeconfig")
@state_dir_option
def cluster_kubeconfig(state_dir: Path | None) -> None:
    """Print the kubeconfig path of the running local cluster."""
    from lepton.cluster.local import LocalCluster

    click.echo(LocalCluster(state_dir).state.kubeconfig)


# --- components ----------------------------------------------------------------

kubeconfig_option = click.option(
    "--kubeconfig",
    envvar="KUBECONFIG",
    default=None,
    help="Kubeconfig file (default: $KUBECONFIG, else in-cluster config).",
)
prometheus_option = click.option(
    "--prometheus-url",
    envvar="LEPTON_PROMETHEUS_URL",
    default=None,
    help="Prometheus base URL, e.g. http://prometheus:9090 (env LEPTON_PROMETHEUS_URL).",
)


@main.command("operator")
@kubeconfig_option
@prometheus_option
@click.option("--namespace", default=None, help="Watch one namespace only (default: all).")
@click.option(
    "--scheduler-name",
    default=SCHEDULER_NAME,
    show_default=True,
    help="schedulerName set on LeptonJob pods.",
)
@click.option(
    "--prometheus-query",
    default=None,
    help="PromQL template for a job's joules; placeholders {namespace}, {pods} (the job's "
    'pods, for pod=~"{pods}"), {range_seconds} (default: the exporter\'s per-pod counters, '
    "reset-safe).",
)
@click.option(
    "--liveness",
    "liveness_endpoint",
    default=None,
    help="Serve kopf's liveness probe at this URL, e.g. http://0.0.0.0:8080/healthz.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve the budgets' Prometheus metrics on this port (default: off).",
)
@click.option(
    "--metrics-host", default="0.0.0.0", show_default=True, help="Address for --metrics-port."
)
@click.option(
    "--leader-election",
    is_flag=True,
    help="Run only while holding a coordination.k8s.io Lease, so that of several replicas one "
    "admits and the others wait.",
)
@click.option(
    "--leader-election-namespace",
    envvar="POD_NAMESPACE",
    default="default",
    show_default=True,
    help="Namespace of the Lease (env POD_NAMESPACE).",
)
@click.option(
    "--lease-seconds",
    type=int,
    default=15,
    show_default=True,
    help="How long a silent leader keeps the Lease before another replica takes over.",
)
def operator_command(
    kubeconfig: str | None,
    prometheus_url: str | None,
    namespace: str | None,
    scheduler_name: str,
    prometheus_query: str | None,
    liveness_endpoint: str | None,
    metrics_port: int | None,
    metrics_host: str,
    leader_election: bool,
    leader_election_namespace: str,
    lease_seconds: int,
) -> None:
    """Run the kopf operator: admits LeptonJobs against EnergyBudgets and accounts their energy."""
    from lepton_operator.main import LeaderElection, run
    from lepton_operator.prometheus import DEFAULT_QUERY_TEMPLATE

    election = (
        LeaderElection(
            leader_election_namespace,
            identity=os.environ.get("POD_NAME") or None,
            lease_seconds=lease_seconds,
        )
        if leader_election
        else None
    )

    run(
        kubeconfig,
        namespace,
        prometheus_url,
        scheduler_name=scheduler_name,
        prometheus_query=prometheus_query or DEFAULT_QUERY_TEMPLATE,
        # `lepton -v operator`: the one verbosity flag also logs every kopf handler
        verbose=logging.getLogger().level <= logging.INFO,
        liveness_endpoint=liveness_endpoint,
        metrics_address=(metrics_host, metrics_port) if metrics_port is not None else None,
        leader_election=election,
    )


@main.command("scheduler")
@kubeconfig_option
@prometheus_option
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8888, show_default=True, type=int, help="Port to listen on.")
@click.option("--tls-cert-file", default=None, help="Serve HTTPS with this certificate.")
@click.option("--tls-key-file", default=None, help="The certificate's private key.")
def scheduler_command(
    kubeconfig: str | None,
    prometheus_url: str | None,
    host: str,
    port: int,
    tls_cert_file: str | None,
    tls_key_file: str | None,
) -> None:
    """Run the Lepton scheduler (POST /filter, /prioritize; /healthz, /readyz, /metrics,
    /explain?pod=NAMESPACE/NAME)."""
    from lepton_scheduler.app import run

    run(host, port, kubeconfig, prometheus_url, tls_cert_file, tls_key_file)


@main.command("exporter")
@kubeconfig_option
@click.option(
    "--backend",
    default="nvml",
    show_default=True,
    help="Comma-separated: nvml (GPU meters), rapl (CPU meters), model (estimated from the GPU "
    "profiles, for nodes without meters and kwok fleets); e.g. nvml,rapl.",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=9402,
    show_default=True,
    type=int,
    help="Port to listen on (dcgm-exporter has 9400, so both can run on one node).",
)
@click.option(
    "--node-name", envvar="NODE_NAME", default=None, help="This node's name (env NODE_NAME)."
)
@click.option(
    "--sysfs-root",
    default="/host/sys",
    show_default=True,
    help="Where the host's /sys is mounted (for RAPL's powercap tree).",
)
@click.option(
    "--podresources-socket",
    default="/var/lib/kubelet/pod-resources/kubelet.sock",
    show_default=True,
    help="The kubelet pod-resources socket, to attribute GPUs to pods ('' to disable).",
)
@click.option(
    "--enable-power-capping",
    is_flag=True,
    help="Apply the GPU power limits Lepton decides (needs privileges).",
)
@click.option(
    "--interval-seconds", default=5.0, show_default=True, type=float, help="Sampling interval."
)
@click.option(
    "--sharing-attribution",
    is_flag=True,
    help="Split time-sliced and MPS GPUs by each pod's processes (SM utilisation, else "
    "memory): maps host PIDs to pods through --proc-root; needs hostPID.",
)
@click.option(
    "--proc-root",
    default="/proc",
    show_default=True,
    help="The host's /proc (with hostPID, the container's own), for --sharing-attribution.",
)
@click.option(
    "--dra",
    is_flag=True,
    help="Meter GPUs held through DRA ResourceClaims: maps claimed devices to GPU UUIDs "
    "through this node's ResourceSlices.",
)
@click.option(
    "--time-compression",
    default=1.0,
    show_default=True,
    type=float,
    help="Model backend on a simulated cluster only: count N seconds of energy per wall second, "
    "matching `lepton cluster simulate-work --time-compression N`.",
)
def exporter_command(
    kubeconfig: str | None,
    backend: str,
    host: str,
    port: int,
    node_name: str | None,
    sysfs_root: str,
    podresources_socket: str,
    enable_power_capping: bool,
    interval_seconds: float,
    sharing_attribution: bool,
    proc_root: str,
    dra: bool,
    time_compression: float,
) -> None:
    """Run the power exporter: per-GPU, per-CPU-zone and per-pod power and energy on /metrics."""
    from lepton_exporter.main import run

    # build_exporter checks the backends and the options that go with them (one place).
    run(
        backend=backend,
        host=host,
        port=port,
        node_name=node_name,
        kubeconfig=kubeconfig,
        sysfs_root=sysfs_root,
        podresources_socket=podresources_socket or None,
        enable_power_capping=enable_power_capping,
        interval_seconds=interval_seconds,
        time_compression=time_compression,
        sharing_attribution=sharing_attribution,
        proc_root=proc_root,
        dra=dra,
    )


# --- crds --------------------------------------------------------------------


@main.command("crds")
def crds_command() -> None:
    """Print the EnergyBudget and LeptonJob CRDs shipped in the package, one YAML stream:
    `lepton crds | kubectl apply --server-side -f -`."""
    from lepton.api import crd_dir

    files = sorted(crd_dir().glob("*.yaml"))
    if not files:
        raise click.ClickException(f"no CRDs in {crd_dir()}: the package is incomplete")
    click.echo("---\n".join(path.read_text() for path in files), nl=False)


# --- simulate ----------------------------------------------------------------


@main.command("simulate")
@click.option(
    "--pods",
    "pods_path",
    type=TraceFile(),
    help="Pod trace CSV: a path, or the name of a shipped one, e.g. "
    "openb_pod_list_gpushare20.csv (default: openb_pod_list_default.csv, lepton/data).",
)
@click.option(
    "--nodes",
    "nodes_path",
    type=TraceFile(),
    help="Node list CSV: a path, or the name of a shipped one "
    "(default: openb_node_list_gpu_node.csv, lepton/data).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("results"),
    show_default=True,
    help="Output folder for JSON, markdown and PNG charts.",
)
@click.option("--name", default="simulation", show_default=True, help="Output file prefix.")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(
        [
            "default-scheduler",
            "default-scheduler-capped",
            "most-allocated",
            "most-allocated-capped",
            "lepton-balanced-uncapped",
            "lepton-balanced",
            "lepton-efficiency-uncapped",
            "lepton-efficiency",
        ]
    ),
    help="Policies to compare (repeatable; default: all). -capped: every GPU at the Auto "
    "power limit; -uncapped: Lepton with GPUs at their default limit.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="First seed.")
@click.option("--pod-limit", type=int, default=None, help="Replay only the first N pods.")
@click.option(
    "--node-count",
    type=int,
    default=150,
    show_default=True,
    help="Nodes sampled per seed (stratified by GPU model); 0 = the whole fleet.",
)
@click.option(
    "--gpu-model",
    "gpu_models",
    multiple=True,
    metavar="TRACE=PROFILE",
    help="Which profile stands for a trace model (repeatable; default G2=A100, G3=H100).",
)
@click.option(
    "--trace-speed",
    type=float,
    default=None,
    help="Speed (A40 = 1) of the GPUs the trace's pods ran on (default: the fleet's mean).",
)
@click.option(
    "--scale-in-grace-seconds",
    type=float,
    default=600.0,
    show_default=True,
    help="How long a node stays empty before the autoscaler removes it.",
)
@click.option(
    "--provisioning-delay-seconds",
    type=float,
    default=300.0,
    show_default=True,
    help="From the autoscaler's request to a new node taking pods "
    "(cluster-autoscaler FAQ: about 5 min).",
)
@click.option(
    "--expander",
    type=click.Choice(["least-waste", "random"]),
    default="least-waste",
    show_default=True,
    help="Which node group the autoscaler grows (cluster-autoscaler's --expander).",
)
@click.option(
    "--load",
    "loads",
    multiple=True,
    help="A load level: the default scheduler's mean GPU allocation to reach (60%), found by "
    "search, or an arrival scale (x0.008). Repeatable; default 30%, 60%, 85%.",
)
@click.option(
    "--seeds",
    type=int,
    default=5,
    show_default=True,
    help="Seeds 0..N-1 per cell (fleet sample, ties).",
)
@click.option(
    "--regime",
    "regimes",
    multiple=True,
    type=click.Choice(["scale_in", "always_on"]),
    help="Regimes to run (default both).",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    help="QOS=Service|Batch on top of the default "
    "(LS, Guaranteed, Burstable = Service; BE = Batch).",
)
@click.option(
    "--service-utilization-percent",
    type=float,
    default=30.0,
    show_default=True,
    help="A service's demand: percent of one A40 it keeps busy per whole GPU held (x its share).",
)
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Processes to run cells in."
)
@click.option(
    "--deadline-factor",
    type=float,
    default=1.5,
    show_default=True,
    help="A batch job's deadline: this many times its trace run time after it arrives.",
)
def simulate(
    pods_path: Path | None,
    nodes_path: Path | None,
    out_dir: Path,
    name: str,
    policies: tuple[str, ...],
    seed: int,
    pod_limit: int | None,
    node_count: int | None,
    gpu_models: tuple[str, ...],
    trace_speed: float | None,
    scale_in_grace_seconds: float,
    provisioning_delay_seconds: float,
    expander: str,
    loads: tuple[str, ...],
    seeds: int,
    regimes: tuple[str, ...],
    kinds: tuple[str, ...],
    service_utilization_percent: float,
    workers: int,
    deadline_factor: float,
) -> None:
    """Replay a GPU pod trace on a sampled fleet under each policy, with the Lepton scheduler's own
    scoring and a cluster-autoscaler emulation, at several loads and seeds; report energy,
    completion times, service load and node-hours (energy model estimates)."""
    from lepton.sim.run import cli_run, parse_kind_map, parse_model_map

    outcome = cli_run(
        pods_path=pods_path,
        nodes_path=nodes_path,
        out_dir=out_dir,
        name=name,
        policies=policies,
        seeds=tuple(range(seed, seed + max(1, seeds))),
        pod_limit=pod_limit,
        node_count=node_count or None,
        model_map=parse_model_map(gpu_models),
        kind_map=parse_kind_map(kinds),
        loads=loads,
        regimes=regimes or ("scale_in", "always_on"),
        workers=workers,
        progress=click.echo,
        trace_speed=trace_speed,
        scale_in_grace_seconds=scale_in_grace_seconds,
        provisioning_delay_seconds=provisioning_delay_seconds,
        expander=expander,
        service_reference_utilization_percent=service_utilization_percent,
        deadline_factor=deadline_factor,
    )
    from lepton.sim.report import CHART_HINT

    click.echo(outcome.table)
    for path in outcome.files:
        click.echo(f"wrote {path}")
    if not any(path.suffix == ".png" for path in outcome.files):
        click.echo(CHART_HINT)


# --- demo --------------------------------------------------------------------


@main.command("demo")
@state_dir_option
@click.option(
    "--wait/--no-wait",
    default=None,
    help="At the end, keep the cluster up until Ctrl-C (default: only when run from a terminal).",
)
@click.option(
    "--time-compression",
    default=360.0,
    show_default=True,
    type=float,
    help="Simulated seconds of GPU work per wall second.",
)
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("results/demo"),
    show_default=True,
    help="Where the report (HTML, PNG, JSON) goes.",
)
def demo(
    state_dir: Path | None, wait: bool | None, time_compression: float, report_dir: Path
) -> None:
    """Bring up a local control plane with a mixed GPU fleet, run Lepton on the example jobs,
    compare with the default scheduler and write a report; Ctrl-C stops everything."""
    from lepton import demo as demo_module

    demo_module.run(
        state_dir,
        echo=click.echo,
        wait=sys.stdin.isatty() if wait is None else wait,
        time_compression=time_compression,
        report_dir=report_dir,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
