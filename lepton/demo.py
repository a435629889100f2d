"""``lepton demo``: the whole of Lepton on a laptop, with no cluster of one's own.

For now it brings up the real local control plane with a mixed GPU fleet and
shows it; the operator, the extender, the exporter and the example workload
join it as they land.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

from lepton.cluster import tools
from lepton.cluster.fleet import DEFAULT_FLEET, Fleet
from lepton.cluster.local import LocalCluster

NODE_COLUMNS = (
    "NAME:.metadata.name,"
    "GPU-MODEL:.metadata.labels.nvidia\\.com/gpu\\.product,"
    "GPUS:.status.allocatable.nvidia\\.com/gpu,"
    "ZONE:.metadata.labels.topology\\.kubernetes\\.io/zone,"
    "READY:.status.conditions[?(@.type=='Ready')].status"
)


def run(
    state_dir: Path | None,
    echo: Callable[[str], None],
    fleet: Fleet = DEFAULT_FLEET,
    wait: bool = True,
) -> None:
    """Build what is missing, start the cluster, show it, and stop everything on Ctrl-C."""
    tools.build_all(("etcd", "kwok", "kubernetes"), progress=echo)
    cluster = LocalCluster(state_dir, progress=echo)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        cluster.up(fleet)
        echo("")
        echo(cluster.kubectl("get", "nodes", "-o", f"custom-columns={NODE_COLUMNS}").stdout)
        for name, row in cluster.status().items():
            echo(f"  {name:<26} healthy={row['healthy']}  {row['rss_bytes'] / 2**20:.0f} MiB")
        echo("")
        echo(f"The local control plane is up. Try:  export KUBECONFIG={cluster.kubeconfig}")
        echo(f"                                     {tools.tool_path('kubectl')} get nodes")
        if wait:
            echo("Press Ctrl-C to stop everything.")
            stop.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        echo("[demo] stopping the local control plane")
        cluster.down()
