"""The Helm chart renders, lints and validates, and stays in step with what it packages.

``helm lint --strict`` and ``helm template`` run offline; every rendered object is checked
by ``kubernetes-validate --strict`` against Kubernetes 1.33's own schemas, with the default
values and with every feature switched on (``ci/all-features-values.yaml``).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lepton.cluster import tools

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "lepton"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
KUBE_VERSION = "1.33.5"
MONITORING_APIS = (
    "--api-versions=monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions=monitoring.coreos.com/v1/PodMonitor",
)

Render = Callable[..., list[dict[str, Any]]]

# helm is built from its Go module: `make test` builds it, `make test-fast` leaves these out.
pytestmark = pytest.mark.tools


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tools.tool_path("helm")), *args], capture_output=True, text=True, check=False
    )
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
    return result


def template(*args: str) -> str:
    return helm("template", "lepton", str(CHART), f"--kube-version={KUBE_VERSION}", *args).stdout


@pytest.fixture(scope="module")
def render() -> Render:
    def _render(*args: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(template(*args)) if d]

    return _render


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "DaemonSet")
    }


# --- lint and validate ---------------------------------------------------------------


@pytest.mark.parametrize("values", [None, ALL_FEATURES], ids=["defaults", "all-features"])
def test_helm_lint_strict_is_clean(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), f"--kube-version={KUBE_VERSION}"]
    if values:
        args += ["-f", str(values)]
    result = helm(*args)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize(
    "args",
    [(), ("-f", str(ALL_FEATURES), *MONITORING_APIS)],
    ids=["defaults", "all-features"],
)
def test_rendered_manifests_pass_kubernetes_validate_strict(args: tuple[str, ...]) -> None:
    manifests = template(*args)
    validate = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [str(validate), "--strict", f"--kubernetes-version={KUBE_VERSION}", "--quiet", "-"],
        input=manifests,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Only the Prometheus Operator's kinds lack a bundled schema (checked in the next test).
    for line in (result.stdout + result.stderr).splitlines():
        assert "ServiceMonitor" in line or "PodMonitor" in line, line


def test_monitors_are_made_only_when_the_prometheus_operator_crds_exist(render: Render) -> None:
    without = render("-f", str(ALL_FEATURES))
    assert not [o for o in without if o["kind"] in ("ServiceMonitor", "PodMonitor")]
    objects = render("-f", str(ALL_FEATURES), *MONITORING_APIS)
    service_monitors = by_kind(objects, "ServiceMonitor")
    # The Lepton scheduler's decisions and latency, and the operator's budget gauges.
    components = {
        m["metadata"]["labels"]["app.kubernetes.io/component"] for m in service_monitors.values()
    }
    assert components == {"scheduler-server", "operator"}
    (pod_monitor,) = by_kind(objects, "PodMonitor").values()
    for service_monitor in service_monitors.values():
        service = by_kind(objects, "Service")[service_monitor["metadata"]["name"]]
        assert service_monitor["spec"]["selector"]["matchLabels"].items() <= (
            service["metadata"]["labels"].items()
        )
        port = service_monitor["spec"]["endpoints"][0]["port"]
        assert port == service["spec"]["ports"][0]["name"]
        assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    daemonset = by_kind(objects, "DaemonSet")[pod_monitor["metadata"]["name"]]
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = daemonset["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in ports}


def test_bad_values_are_refused_by_the_schema() -> None:
    result = helm("template", "lepton", str(CHART), "--set", "exporter.backend=dcgm", check=False)
    assert result.returncode != 0
    assert "exporter.backend" in result.stderr or "backend" in result.stderr
    typo = helm("template", "lepton", str(CHART), "--set", "operater.enabled=false", check=False)
    assert typo.returncode != 0 and "operater" in typo.stderr


def test_scheduler_config_is_the_lepton_scheduler_profile(render: Render) -> None:
    objects = render()
    config_map = next(
        o
        for o in by_kind(objects, "ConfigMap").values()
        if "kube-scheduler-config.yaml" in o.get("data", {})
    )
    rendered = yaml.safe_load(config_map["data"]["kube-scheduler-config.yaml"])
    (service,) = [
        s
        for s in by_kind(objects, "Service").values()
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "scheduler-server"
    ]
    url = f"http://{service['metadata']['name']}.default.svc:{service['spec']['ports'][0]['port']}"
    source = (REPO / "scheduler" / "lepton_scheduler" / "kube-scheduler-config.yaml").read_text()
    expected = yaml.safe_load(
        source.replace("${SCHEDULER_URL}", url).replace("${KUBECONFIG}", "unused")
    )
    # In-cluster there is no kubeconfig file: kube-scheduler uses its ServiceAccount.
    del expected["clientConnection"]["kubeconfig"]
    assert rendered == expected


def test_kube_scheduler_image_follows_the_cluster_version(render: Render) -> None:
    (deployment,) = [
        o
        for o in render()
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == "scheduler"
    ]
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert images == [f"registry.k8s.io/kube-scheduler:v{KUBE_VERSION}"]
    pinned = render("--set", "scheduler.kubeScheduler.image.tag=v1.33.1")
    assert "registry.k8s.io/kube-scheduler:v1.33.1" in json.dumps(pinned)


def test_operator_runs_two_replicas_that_elect_a_leader_with_kopf_liveness(
    render: Render,
) -> None:
    objects = render()
    (operator,) = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
    ]
    assert operator["spec"]["replicas"] == 2
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    assert "--leader-election" in container["args"]
    namespace = operator["metadata"]["namespace"]
    assert f"--leader-election-namespace={namespace}" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    (role,) = [
        o for o in objects if o["kind"] == "Role" and "leader-election" in o["metadata"]["name"]
    ]
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    liveness = next(a for a in container["args"] if a.startswith("--liveness="))
    port = int(liveness.split(":")[-1].split("/")[0])
    probe = container["livenessProbe"]["httpGet"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[probe["port"]] == port and liveness.endswith(probe["path"])


# --- least privilege ------------------------------------------------------------------


def test_every_container_is_locked_down_where_it_can_be(render: Render) -> None:
    specs = pod_specs(render())
    assert len(specs) == 4
    for name, spec in specs.items():
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc.get("privileged"), name
            assert "add" not in sc["capabilities"], name
        if not name.endswith("-exporter"):
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] != 0, name


def test_exporter_runs_without_root_when_it_needs_no_root_files(render: Render) -> None:
    objects = render(
        "--set", "exporter.backend=nvml", "--set", "exporter.podResources.enabled=false"
    )
    spec = next(s for n, s in pod_specs(objects).items() if n.endswith("-exporter"))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["containers"][0]["securityContext"]["runAsNonRoot"] is True
    assert "--podresources-socket=" in spec["containers"][0]["args"]
    assert not [v for v in spec["volumes"] if v["name"] == "pod-resources"]


def test_exporter_gets_sys_admin_only_with_power_capping(render: Render) -> None:
    def capabilities(*args: str) -> dict[str, Any]:
        spec = next(s for n, s in pod_specs(render(*args)).items() if n.endswith("-exporter"))
        caps: dict[str, Any] = spec["containers"][0]["securityContext"]["capabilities"]
        return caps

    assert capabilities() == {"drop": ["ALL"]}
    assert capabilities("--set", "exporter.powerCapping.enabled=true") == {
        "drop": ["ALL"],
        "add": ["SYS_ADMIN"],
    }


def test_exporter_mounts_host_sys_read_only_elsewhere_and_the_pod_resources_socket(
    render: Render,
) -> None:
    spec = next(s for n, s in pod_specs(render()).items() if n.endswith("-exporter"))
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert volumes["sys"]["hostPath"]["path"] == "/sys"
    assert mounts["sys"]["mountPath"] == "/host/sys" and mounts["sys"]["readOnly"] is True
    assert "--sysfs-root=/host/sys" in spec["containers"][0]["args"]
    assert volumes["pod-resources"]["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"
    socket_arg = "--podresources-socket=/var/lib/kubelet/pod-resources/kubelet.sock"
    assert socket_arg in spec["containers"][0]["args"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "Exists"}
    ]


def test_no_role_grants_secrets_or_wildcards(render: Render) -> None:
    objects = render("-f", str(ALL_FEATURES))
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "Role")]
    assert len(roles) == 5  # + the operator's leader-election Role
    for role in roles:
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"], role["metadata"]["name"]
            assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"]


# --- dashboards and the rest ------------------------------------------------------------


def test_dashboards_are_configmaps_for_the_grafana_sidecar(render: Render) -> None:
    maps = [
        o
        for o in render()
        if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"]
    ]
    sources = sorted(p.name for p in (REPO / "deploy" / "dashboards").glob("*.json"))
    assert sorted(k for m in maps for k in m["data"]) == sources
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, content),) = config_map["data"].items()
        assert json.loads(content) == json.loads(
            (REPO / "deploy" / "dashboards" / name).read_text()
        )
    assert not [
        o
        for o in render("--set", "dashboards.enabled=false")
        if "grafana_dashboard" in json.dumps(o)
    ]


def test_network_policies_only_when_asked(render: Render) -> None:
    assert not by_kind(render(), "NetworkPolicy")
    policies = by_kind(render("-f", str(ALL_FEATURES)), "NetworkPolicy")
    assert len(policies) == 3
    server = next(p for n, p in policies.items() if n.endswith("-scheduler-server"))
    peers = server["spec"]["ingress"][0]["from"]
    assert peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "scheduler"


# --- the chart runs the CLI that exists ------------------------------------------------

# Options the chart passes that the CLI does not have (none: the pods would exit on them).
MISSING_FROM_CLI: dict[str, set[str]] = {}


def test_chart_passes_only_options_the_lepton_cli_accepts(render: Render) -> None:
    from lepton.cli import main

    objects = render("-f", str(ALL_FEATURES))
    seen = set()
    for spec in pod_specs(objects).values():
        for container in spec["containers"]:
            if container["image"].startswith("registry.k8s.io/kube-scheduler"):
                continue
            # `lepton -v operator ...`: the command's own options come before the subcommand.
            global_args = list(itertools.takewhile(lambda a: a.startswith("-"), container["args"]))
            assert set(global_args) <= {o for p in main.params for o in getattr(p, "opts", [])}
            subcommand, *args = container["args"][len(global_args) :]
            command = main.commands[subcommand]
            known = {o for p in command.params for o in getattr(p, "opts", [])}
            passed = {a.split("=", 1)[0] for a in args if a.startswith("--")}
            assert passed - known == MISSING_FROM_CLI.get(subcommand, set()), subcommand
            seen.add(subcommand)
    assert seen == {"operator", "scheduler", "exporter"}


def test_operator_watching_one_namespace_is_granted_only_that_namespace(render: Render) -> None:
    objects = render("--set", "operator.watchNamespace=team-a")
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    role = "lepton-operator"
    (grant,) = [b for b in bindings if b["roleRef"]["name"] == role]
    assert grant["kind"] == "RoleBinding" and grant["metadata"]["namespace"] == "team-a"
    operator = next(s for n, s in pod_specs(objects).items() if n == role)
    assert "--namespace=team-a" in operator["containers"][0]["args"]
    # Discovery (CRDs, namespaces) stays cluster-wide and read-only.
    (discovery,) = [b for b in bindings if b["roleRef"]["name"] == f"{role}-discovery"]
    assert discovery["kind"] == "ClusterRoleBinding"


def test_exporter_gets_host_pid_and_a_read_only_proc_only_with_sharing(render: Render) -> None:
    def exporter(*args: str) -> dict[str, Any]:
        return next(s for n, s in pod_specs(render(*args)).items() if n.endswith("-exporter"))

    plain = exporter()
    assert not plain.get("hostPID")
    assert "proc" not in {v["name"] for v in plain["volumes"]}
    assert "--sharing-attribution" not in plain["containers"][0]["args"]
    shared = exporter("--set", "exporter.sharing.enabled=true")
    assert shared["hostPID"] is True
    volumes = {v["name"]: v for v in shared["volumes"]}
    mounts = {m["name"]: m for m in shared["containers"][0]["volumeMounts"]}
    assert volumes["proc"]["hostPath"]["path"] == "/proc"
    assert mounts["proc"] == {"name": "proc", "mountPath": "/host/proc", "readOnly": True}
    assert {"--sharing-attribution", "--proc-root=/host/proc"} <= set(
        shared["containers"][0]["args"]
    )


def test_exporter_reads_resource_slices_only_with_dra(render: Render) -> None:
    def rules(*args: str) -> list[dict[str, Any]]:
        roles = by_kind(render(*args), "ClusterRole")
        role = next(r for n, r in roles.items() if n.endswith("-exporter"))
        found: list[dict[str, Any]] = role["rules"]
        return found

    assert not [r for r in rules() if "resource.k8s.io" in r["apiGroups"]]
    assert {
        "apiGroups": ["resource.k8s.io"],
        "resources": ["resourceslices"],
        "verbs": [
            "get",
            "list",
        ],
    } in rules("--set", "exporter.dra.enabled=true")
