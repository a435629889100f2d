"""The command lines and configuration of the control plane's components.

What each of etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok is
started with on the local cluster: loopback ports, the cluster's certificates, and the
settings a throwaway test cluster wants (no fsync, no request throttling, no leader
election). :class:`~lepton.cluster.local.LocalCluster` picks the ports and starts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lepton.cluster.certs import CertPaths

# kube-scheduler's client to the apiserver: enough for a burst of thousands of pods.
SCHEDULER_CLIENT_QPS = 200
SCHEDULER_CLIENT_BURST = 400


def etcd_argv(binary: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        str(binary),
        "--name=lepton",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=lepton={peer}",
        # Throwaway data: fsync buys nothing and costs seconds (envtest does the same).
        "--unsafe-no-fsync=true",
        "--log-level=warn",
        "--quota-backend-bytes=8589934592",
    ]


def apiserver_argv(
    binary: Path, c: CertPaths, port: int, etcd_port: int, cert_dir: Path
) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
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
    ]


def _serving_flags(kubeconfig: Path, port: int, cert_dir: Path) -> list[str]:
    """A controller's own HTTPS endpoint on loopback, its health paths open to all."""
    return [
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
    ]


def controller_manager_argv(
    binary: Path, c: CertPaths, kubeconfig: Path, port: int, cert_dir: Path
) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        *_serving_flags(kubeconfig, port, cert_dir),
        f"--root-ca-file={c.ca_cert}",
        f"--service-account-private-key-file={c.service_account_key}",
        f"--cluster-signing-cert-file={c.ca_cert}",
        f"--cluster-signing-key-file={c.ca_key}",
        "--leader-elect=false",
        "--kube-api-qps=500",
        "--kube-api-burst=1000",
        "--concurrent-job-syncs=20",
    ]


def scheduler_argv(
    binary: Path, config_path: Path, kubeconfig: Path, port: int, cert_dir: Path
) -> list[str]:
    return [str(binary), f"--config={config_path}", *_serving_flags(kubeconfig, port, cert_dir)]


def scheduler_config(kubeconfig: Path, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A KubeSchedulerConfiguration: ``config``'s profiles (or the default one), with the
    cluster's client connection and no leader election."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        **(config or {}),
        "clientConnection": {
            "kubeconfig": str(kubeconfig),
            "qps": SCHEDULER_CLIENT_QPS,
            "burst": SCHEDULER_CLIENT_BURST,
        },
        "leaderElection": {"leaderElect": False},
    }


def kwok_argv(binary: Path, kubeconfig: Path, port: int, stages_path: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--cidr=10.0.0.0/16",
        "--node-ip=10.0.0.1",
        f"--server-address=127.0.0.1:{port}",
        f"--config={stages_path}",
    ]
