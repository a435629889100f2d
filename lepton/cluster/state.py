"""The local cluster's ``state.json``: what ``up`` started, so that another process finds it.

``lepton cluster status`` and ``lepton cluster down`` read it from the state directory;
``down`` stops exactly the processes recorded here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lepton.cluster.processes import Process


def default_state_dir() -> Path:
    """Where ``lepton cluster`` keeps its state unless told otherwise."""
    env = os.environ.get("LEPTON_CLUSTER_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / "lepton-cluster"


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
