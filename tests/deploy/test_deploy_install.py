"""``helm install`` onto the real local control plane, RBAC checked by its own apiserver.

kwok plays the kubelets, so every pod "runs" without a container: this proves that the
apiserver admits every object, that the workloads get scheduled where they should (the
exporter on every GPU node) and become Ready, that uninstalling leaves nothing but the
CRDs, and, with ``kubectl auth can-i --as=system:serviceaccount:…``, what each component's
ServiceAccount may and may not do.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lepton.cluster import tools
from lepton.cluster.fleet import DEFAULT_FLEET
from lepton.cluster.local import LocalCluster
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "lepton"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
NAMESPACE = "lepton-system"
RELEASE = "lepton"
CRDS = ("energybudgets.lepton.dev", "leptonjobs.lepton.dev")
# Every kind the chart makes, namespaced or not, to prove that uninstall removes them all.
CHART_KINDS = (
    "deployments.apps,daemonsets.apps,services,configmaps,serviceaccounts,"
    "networkpolicies.networking.k8s.io,rolebindings.rbac.authorization.k8s.io,pods"
)
# The Prometheus Operator's CRDs, from its Go module (the Go proxy serves what CI already
# uses to build the Kubernetes tools), so that the ServiceMonitor and PodMonitor the chart
# makes are checked by a real apiserver against their real schemas.
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.80.1"
MONITOR_CRDS = ("servicemonitors", "podmonitors")
CLUSTER_KINDS = (
    "clusterroles.rbac.authorization.k8s.io,clusterrolebindings.rbac.authorization.k8s.io"
)


def helm(cluster: LocalCluster, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(tools.tool_path("helm")), *args],
        capture_output=True,
        text=True,
        env=cluster.env(),
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def get_json(cluster: LocalCluster, *args: str) -> Any:
    data: Any = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return data


def left_behind(cluster: LocalCluster, release: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    names = []
    for kinds, scope in ((CHART_KINDS, "--all-namespaces"), (CLUSTER_KINDS, "")):
        args = [kinds, "-l", selector, "-o", "name"] + ([scope] if scope else [])
        names += cluster.kubectl("get", *args).stdout.split()
    return names


def assert_every_workload_ready(cluster: LocalCluster, namespace: str, release: str) -> None:
    selector = f"app.kubernetes.io/instance={release}"
    deployments = get_json(cluster, "deployments", "-n", namespace, "-l", selector)["items"]
    assert isinstance(deployments, list) and len(deployments) == 3
    for d in deployments:
        status = d["status"]
        # the operator runs two replicas (one leads, by a Lease); the others one each
        want = 2 if d["metadata"]["name"].endswith("operator") else 1
        assert status.get("readyReplicas") == d["spec"]["replicas"] == want, d["metadata"]["name"]
    (daemonset,) = get_json(cluster, "daemonsets", "-n", namespace, "-l", selector)["items"]
    status = daemonset["status"]
    # Every node of the fleet has a GPU (nvidia.com/gpu.product): one exporter on each.
    assert status["desiredNumberScheduled"] == DEFAULT_FLEET.node_count
    assert status["numberReady"] == DEFAULT_FLEET.node_count


def prometheus_operator_crds() -> list[Path]:
    result = subprocess.run(
        ["go", "mod", "download", "-json", PROMETHEUS_OPERATOR],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"go mod download {PROMETHEUS_OPERATOR}: {result.stderr}"
    folder = Path(json.loads(result.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    return [folder / f"monitoring.coreos.com_{name}.yaml" for name in MONITOR_CRDS]


@pytest.fixture(scope="module")
def release(cluster: LocalCluster) -> Iterator[str]:
    """Lepton installed with its default values, as a user would install it."""
    output = helm(
        cluster,
        "install",
        RELEASE,
        str(CHART),
        f"--namespace={NAMESPACE}",
        "--create-namespace",
        "--wait",
        "--timeout=4m",
    )
    try:
        yield output
    finally:
        helm(cluster, "uninstall", RELEASE, f"--namespace={NAMESPACE}", "--wait")


def test_install_with_defaults_makes_every_workload_ready(
    cluster: LocalCluster, release: str
) -> None:
    assert "STATUS: deployed" in release
    assert_every_workload_ready(cluster, NAMESPACE, RELEASE)
    for crd in CRDS:
        cluster.kubectl("get", "crd", crd)
    scheduler = get_json(cluster, "deployment", f"{RELEASE}-scheduler", "-n", NAMESPACE)
    (container,) = scheduler["spec"]["template"]["spec"]["containers"]
    # kube-scheduler follows the cluster's version unless pinned.
    assert (
        container["image"]
        == f"registry.k8s.io/kube-scheduler:{tools.TOOLS['kube-apiserver'].version}"
    )


def test_notes_tell_the_user_what_to_do_next(release: str) -> None:
    assert f"kubectl get deploy,daemonset -n {NAMESPACE}" in release
    assert "kind: EnergyBudget" in release
    assert "prometheus.url is empty" in release
    assert "kubectl delete crd energybudgets.lepton.dev leptonjobs.lepton.dev" in release


# (component, verb, resource, namespace or "" for all namespaces / cluster scope, allowed)
CAN_I = [
    # The operator: budgets, jobs, their Jobs and pods; never Secrets, never deletes.
    ("operator", "list", "energybudgets.lepton.dev", "", True),
    ("operator", "patch", "energybudgets.lepton.dev/status", "team-a", True),
    ("operator", "patch", "leptonjobs.lepton.dev/status", "team-a", True),
    ("operator", "create", "jobs.batch", "team-a", True),
    ("operator", "patch", "jobs.batch", "team-a", True),
    ("operator", "patch", "pods", "team-a", True),
    ("operator", "create", "events", "team-a", True),
    ("operator", "watch", "customresourcedefinitions.apiextensions.k8s.io", "", True),
    ("operator", "list", "namespaces", "", True),
    ("operator", "get", "nodes", "", True),
    ("operator", "patch", "nodes", "", False),
    ("operator", "get", "secrets", "team-a", False),
    ("operator", "list", "secrets", "", False),
    ("operator", "get", "configmaps", "team-a", False),
    ("operator", "create", "pods", "team-a", False),
    ("operator", "delete", "pods", "team-a", False),
    ("operator", "delete", "jobs.batch", "team-a", False),
    ("operator", "create", "energybudgets.lepton.dev", "team-a", False),
    ("operator", "delete", "leptonjobs.lepton.dev", "team-a", False),
    ("operator", "update", "customresourcedefinitions.apiextensions.k8s.io", "", False),
    ("operator", "create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
    # The Lepton scheduler: reads what it scores with, records its decisions as Events.
    ("scheduler-server", "list", "nodes", "", True),
    ("scheduler-server", "watch", "pods", "", True),
    ("scheduler-server", "watch", "energybudgets.lepton.dev", "", True),
    ("scheduler-server", "create", "events", "team-a", True),
    ("scheduler-server", "get", "secrets", "team-a", False),
    ("scheduler-server", "create", "pods/binding", "team-a", False),
    ("scheduler-server", "patch", "nodes", "", False),
    ("scheduler-server", "delete", "pods", "team-a", False),
    ("scheduler-server", "patch", "energybudgets.lepton.dev/status", "team-a", False),
    ("scheduler-server", "list", "configmaps", "", False),
    # The second kube-scheduler: what upstream's multiple-schedulers example grants.
    ("scheduler", "create", "pods/binding", "team-a", True),
    ("scheduler", "list", "nodes", "", True),
    ("scheduler", "watch", "pods", "", True),
    ("scheduler", "create", "events.events.k8s.io", "team-a", True),
    ("scheduler", "list", "persistentvolumeclaims", "", True),
    ("scheduler", "get", "secrets", "kube-system", False),
    ("scheduler", "list", "secrets", "", False),
    ("scheduler", "list", "energybudgets.lepton.dev", "", False),
    ("scheduler", "delete", "nodes", "", False),
    ("scheduler", "patch", "deployments.apps", "team-a", False),
    # The exporter: reads nodes and pods, writes nothing.
    ("exporter", "get", "nodes", "", True),
    ("exporter", "list", "nodes", "", True),
    ("exporter", "watch", "pods", "", True),
    ("exporter", "get", "secrets", "team-a", False),
    ("exporter", "list", "secrets", "", False),
    ("exporter", "patch", "pods", "team-a", False),
    ("exporter", "patch", "nodes", "", False),
    ("exporter", "create", "events", "team-a", False),
    ("exporter", "list", "energybudgets.lepton.dev", "", False),
    ("exporter", "delete", "pods", "team-a", False),
]


@pytest.mark.parametrize(
    ("component", "verb", "resource", "namespace", "allowed"),
    CAN_I,
    ids=[f"{c}-{'may' if a else 'may-not'}-{v}-{r}" for c, v, r, _, a in CAN_I],
)
def test_service_account_permissions(
    cluster: LocalCluster,
    release: str,
    component: str,
    verb: str,
    resource: str,
    namespace: str,
    allowed: bool,
) -> None:
    account = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-{component}"
    resource_name, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource_name, f"--as={account}"]
    if subresource:
        args.append(f"--subresource={subresource}")
    args += [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    result = cluster.kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    assert answer == ("yes" if allowed else "no"), f"{account} can-i {verb} {resource}: {answer}"


def test_kube_scheduler_may_read_the_authentication_configmap_only_in_kube_system(
    cluster: LocalCluster, release: str
) -> None:
    account = f"--as=system:serviceaccount:{NAMESPACE}:{RELEASE}-scheduler"
    allowed = cluster.kubectl(
        "auth",
        "can-i",
        "get",
        "configmaps/extension-apiserver-authentication",
        "-n",
        "kube-system",
        account,
        check=False,
    )
    assert allowed.stdout.strip() == "yes"
    other = cluster.kubectl(
        "auth",
        "can-i",
        "get",
        "configmaps/kube-root-ca.crt",
        "-n",
        "kube-system",
        account,
        check=False,
    )
    assert other.stdout.strip() == "no"


def test_install_with_every_feature_then_uninstall_leaves_only_the_crds(
    cluster: LocalCluster,
) -> None:
    name, namespace = "lepton-all", "lepton-all"
    # What the all-features values refer to: Grafana's namespace and the NVIDIA RuntimeClass.
    cluster.kubectl("create", "namespace", "monitoring", check=False)
    for crd_file in prometheus_operator_crds():
        cluster.kubectl("apply", "--server-side", "-f", str(crd_file))
    for name in MONITOR_CRDS:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}.monitoring.coreos.com")
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": "nvidia"},
                "handler": "nvidia",
            }
        ),
    )
    out = helm(
        cluster,
        "install",
        name,
        str(CHART),
        f"--namespace={namespace}",
        "--create-namespace",
        "-f",
        str(ALL_FEATURES),
        "--wait",
        "--timeout=4m",
    )
    assert "STATUS: deployed" in out
    assert_every_workload_ready(cluster, namespace, name)
    made = left_behind(cluster, name)
    assert sum(n.startswith("networkpolicy") for n in made) == 3
    # Helm saw the Prometheus Operator's API: the monitors exist and pass strict validation.
    monitors = cluster.kubectl(
        "get", "servicemonitors,podmonitors", "-n", namespace, "-o", "name"
    ).stdout.split()
    assert len(monitors) == 3, monitors  # scheduler-server, operator (ServiceMonitors), exporter
    manifest = helm(cluster, "get", "manifest", name, f"--namespace={namespace}")
    docs = [
        d for d in manifest.split("\n---") if "kind: ServiceMonitor" in d or "kind: PodMonitor" in d
    ]
    strict = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input="\n---".join(docs)
    )
    assert strict.stdout.count("(server dry run)") == 3
    dashboards = cluster.kubectl(
        "get", "configmaps", "-n", "monitoring", "-l", "grafana_dashboard=1", "-o", "name"
    ).stdout.split()
    assert len(dashboards) == len(list((REPO / "deploy" / "dashboards").glob("*.json")))

    helm(cluster, "uninstall", name, f"--namespace={namespace}", "--wait")
    wait_for(
        lambda: not left_behind(cluster, name), 90, f"{name}'s objects to be gone", interval=1.0
    )
    assert left_behind(cluster, name) == []
    assert cluster.kubectl("get", "servicemonitors,podmonitors", "-A", "-o", "name").stdout == ""
    for monitor_crd in MONITOR_CRDS:
        cluster.kubectl("delete", "crd", f"{monitor_crd}.monitoring.coreos.com")
    # What uninstall keeps on purpose (docs/install.md): the CRDs.
    for crd in CRDS:
        cluster.kubectl("get", "crd", crd)
