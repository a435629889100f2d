"""Fixtures shared by every test tier.

``cluster`` is the real local control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok), started once per test session
on 127.0.0.1 and stopped at its end. ``namespace`` gives each end-to-end test a
namespace of its own on it, so tests never see each other's objects.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lepton.cluster import tools
from lepton.cluster.local import LocalCluster
from lepton.cluster.stack import LeptonStack
from lepton.data import data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shipped_data() -> Path:
    """The public data the package ships (``lepton/data``, or ``$LEPTON_DATA_DIR``)."""
    path = data_dir()
    assert (path / "traces").is_dir(), f"the data folder {path} has no traces/: see lepton/data"
    return path


# The fixtures that start or use the local control plane: a test asking for one is an
# end-to-end test whether or not its module says so, so `make test-fast` never starts one.
CLUSTER_FIXTURES = {"cluster", "lepton_stack"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def _progress(message: str) -> None:
    print(message, file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real control plane with the default mixed GPU fleet, for the whole session."""
    tools.build_all(("etcd", "kwok", "kubernetes", "helm"), progress=_progress)
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), progress=_progress)
    local.up()
    try:
        yield local
    finally:
        local.down()


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace on the session's cluster, deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    # Pods are rejected until the namespace has its default ServiceAccount: wait for it
    # here rather than in every test.
    cluster.create_namespace(name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# One wall second stands for this many seconds of GPU work on the stack's cluster:
# a LeptonJob of one reference GPU-hour runs 10 s on an A40.
STACK_TIME_COMPRESSION = 360.0


@pytest.fixture(scope="session")
def lepton_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeptonStack]:
    """A second local cluster running all of Lepton, as the demo does.

    The operator (cluster-wide), the Lepton scheduler with the ``lepton-scheduler`` profile,
    the exporter's model backend, a real Prometheus scraping both, and the work
    simulator that finishes LeptonJob pods when their work is done on the GPU they
    got. It is a cluster of its own so that its cluster-wide operator never meets
    the namespaced operators other tests start on ``cluster``.
    """
    tools.build_all(("etcd", "kwok", "kubernetes"), progress=_progress)
    local = LocalCluster(tmp_path_factory.mktemp("stack"), progress=_progress)
    local.up(hold_lepton_pods=True)
    try:
        stack = LeptonStack(local)
        stack.start_all(time_compression=STACK_TIME_COMPRESSION)
        yield stack
    finally:
        local.down()
