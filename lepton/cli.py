"""The ``lepton`` command: one entry point for every component and tool.

Each subcommand imports its component lazily, so that ``lepton --help`` and
``lepton cluster status`` stay fast and a node running the exporter never
imports the operator.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from lepton import __version__


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


def _progress(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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

    try:
        t.build_all(only or ("etcd", "kwok", "kubernetes", "helm"), progress=_progress)
    except t.ToolBuildError as error:
        raise click.ClickException(str(error)) from None
    for tool in t.TOOLS.values():
        click.echo(f"{tool.name:<24} {tool.version:<9} {tool.path}")


@tools.command("path")
@click.argument("name")
def tools_path(name: str) -> None:
    """Print the cached binary's path for NAME (e.g. kubectl)."""
    from lepton.cluster import tools as t

    if name not in t.TOOLS:
        raise click.BadParameter(f"unknown tool {name!r}; one of {', '.join(t.TOOLS)}")
    try:
        click.echo(t.tool_path(name))
    except t.ToolBuildError as error:
        raise click.ClickException(str(error)) from None


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
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="A fleet YAML file, or a trace node list (.csv) such as openb_node_list_gpu_node.csv.",
)
@click.option(
    "--fleet-limit", type=int, default=None, help="Use only the first N nodes of a .csv fleet."
)
@click.option(
    "--extender-url",
    default=None,
    help="Also start a second kube-scheduler, profile lepton-scheduler, calling this extender.",
)
@click.option("--build/--no-build", default=True, help="Build missing tools first (default: yes).")
def cluster_up(
    state_dir: Path | None,
    fleet_file: Path | None,
    fleet_limit: int | None,
    extender_url: str | None,
    build: bool,
) -> None:
    """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, and create
    the GPU fleet; prints the kubeconfig path when everything is healthy."""
    from lepton.cluster import tools as t
    from lepton.cluster.fleet import DEFAULT_FLEET, FleetError, load_fleet
    from lepton.cluster.local import ClusterError, LocalCluster

    try:
        if build:
            t.build_all(("etcd", "kwok", "kubernetes"), progress=_progress)
        fleet = load_fleet(fleet_file, limit=fleet_limit) if fleet_file else DEFAULT_FLEET
        local = LocalCluster(state_dir, progress=_progress)
        local.up(fleet)
        if extender_url:
            local.start_lepton_scheduler(extender_url)
    except (t.ToolBuildError, FleetError, ClusterError) as error:
        raise click.ClickException(str(error)) from None
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
    from lepton.cluster.local import ClusterError, LocalCluster

    try:
        report = LocalCluster(state_dir).status()
    except ClusterError as error:
        raise click.ClickException(str(error)) from None
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


@cluster.command("kubeconfig")
@state_dir_option
def cluster_kubeconfig(state_dir: Path | None) -> None:
    """Print the kubeconfig path of the running local cluster."""
    from lepton.cluster.local import ClusterError, LocalCluster

    local = LocalCluster(state_dir)
    try:
        click.echo(local.state.kubeconfig)
    except ClusterError as error:
        raise click.ClickException(str(error)) from None


# --- demo --------------------------------------------------------------------


@main.command("demo")
@state_dir_option
@click.option("--no-wait", is_flag=True, help="Stop at once instead of waiting for Ctrl-C.")
def demo(state_dir: Path | None, no_wait: bool) -> None:
    """Bring up the local control plane with a mixed GPU fleet and show Lepton at work."""
    from lepton import demo as demo_module
    from lepton.cluster.local import ClusterError
    from lepton.cluster.tools import ToolBuildError

    try:
        demo_module.run(state_dir, echo=click.echo, wait=not no_wait)
    except (ToolBuildError, ClusterError) as error:
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":  # pragma: no cover
    main()
