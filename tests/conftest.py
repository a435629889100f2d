"""Fixtures shared by every test tier.

``cluster`` is the real local control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok), started once per test session
on 127.0.0.1 and stopped at its end. ``namespace`` gives each end-to-end test a
namespace of its own on it, so tests never see each other's objects.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lepton.cluster import tools
from lepton.cluster.local import LocalCluster

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The read-only public data beside the checkout (``../shared/data``)."""
    return Path(os.environ.get("LEPTON_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    assert path.is_dir(), f"the shared data folder {path} is missing: set LEPTON_SHARED_DATA"
    return path


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
    cluster.kubectl("create", "namespace", name)
    # Pods are rejected until kube-controller-manager has made the namespace's default
    # ServiceAccount; wait for it here rather than in every test.
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode:
        assert time.monotonic() < deadline, f"no default ServiceAccount in {name} after 60 s"
        time.sleep(0.2)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
