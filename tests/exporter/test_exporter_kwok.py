"""The model backend watching a real kwok fleet, scraped by a real Prometheus."""

from __future__ import annotations

import json
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from lepton_exporter.main import build_exporter
from lepton_exporter.metrics import METRICS
from lepton_exporter.podresources import api_pb2_grpc
from lepton_exporter.podresources.client import fake_response
from test_exporter_sharing import FakeKubelet, write_process

from lepton.cluster.local import LocalCluster
from lepton.core.names import ANNOTATION_GPU_UTILIZATION
from lepton.core.profiles import get_profile
from lepton.hw.fake_nvml import FakeGpu, FakeNvml
from tests.support import builders, wait_for
from tests.support.exporter import scrape, series, serving
from tests.support.prometheus import query, running_prometheus, wait_for_series

pytestmark = pytest.mark.e2e


def gpu_pod(name: str, node: str) -> str:
    return json.dumps(
        builders.gpu_pod(
            name,
            node=node,
            annotations={ANNOTATION_GPU_UTILIZATION: "0.5"},
            container="trainer",
            requests=True,
        )
    )


def test_one_exporter_serves_the_kwok_fleet_and_charges_its_pods(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    node = "a40-0"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=gpu_pod("train-0", node))
    exporter, stoppers = build_exporter(
        "model",
        node_name=None,
        kubeconfig=str(cluster.kubeconfig),
        sysfs_root=str(tmp_path),
        podresources_socket=None,
        enable_power_capping=False,
    )
    try:
        with serving(exporter) as url, running_prometheus(tmp_path, url) as prometheus:
            pod = wait_for_series(
                prometheus,
                f'lepton_pod_gpu_active_energy_joules_total{{namespace="{namespace}",'
                'pod="train-0",source="model"} > 0',
                timeout=60,
            )
            assert pod[0]["metric"]["node"] == node
            assert pod[0]["metric"]["container"] == "trainer"
            # Every GPU of every kwok node is served, estimated, by this one process.
            nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
            gpus = sum(int(n["status"]["capacity"]["nvidia.com/gpu"]) for n in nodes)
            watts = query(prometheus, 'lepton_gpu_power_watts{source="model"}')
            assert len(watts) == gpus
            a40 = get_profile("A40")
            busy = [float(s["value"][1]) for s in watts if s["metric"]["node"] == node]
            assert max(busy) == pytest.approx(a40.active_power_watts(0.5))
            for family in METRICS:
                if family.startswith(("lepton_cpu", "lepton_gpu_temperature", "lepton_gpu_sm")):
                    continue  # RAPL and NVML-only families: the model has no such meters
                if family in ("lepton_gpu_power_cap_watts", "lepton_exporter_device_errors_total"):
                    continue  # no cap applied, no errors on a healthy fleet
                if family == "lepton_gpu_mig_energy_joules_total":
                    continue  # MIG is NVML's: the model has no MIG devices
                assert query(prometheus, family), f"no series for {family}"
            cluster.kubectl("delete", "pod", "-n", namespace, "train-0", "--wait=false")

            def node_is_free() -> bool:
                snapshot = exporter.accountant.snapshot()
                readings = [g.reading for g in snapshot.gpus if g.reading and g.node == node]
                return all(r.holders == () for r in readings)

            wait_for(node_is_free, 30, "the deleted pod to free its modelled GPU")
    finally:
        for stopper in stoppers:
            stopper()


def test_sharing_attribution_names_pids_by_the_api_servers_pod_uids(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """Two pods time-slicing a GPU: UIDs from the real API server, a real gRPC kubelet socket,
    a recorded /proc, the fake NVML at 80 % / 20 % SM."""
    node = "a40-0"
    for name in ("slice-hi", "slice-lo"):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=gpu_pod(name, node))
    uids = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)[
            "items"
        ]
    }
    proc = tmp_path / "proc"
    for pid, name in ((4101, "slice-hi"), (4202, "slice-lo")):
        slice_uid = uids[name].replace("-", "_")
        write_process(
            proc,
            pid,
            1000,
            f"0::/kubepods.slice/kubepods-pod{slice_uid}.slice/cri-containerd-{pid:064x}.scope\n",
        )
    kubelet = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(  # type: ignore[no-untyped-call]
        FakeKubelet(
            fake_response(
                [
                    (namespace, "slice-hi", "trainer", ["GPU-ts::0"]),
                    (namespace, "slice-lo", "trainer", ["GPU-ts::1"]),
                ]
            )
        ),
        kubelet,
    )
    socket_path = str(tmp_path / "kubelet.sock")
    kubelet.add_insecure_port(f"unix://{socket_path}")
    kubelet.start()
    gpu = FakeGpu(uuid="GPU-ts", power_mw=230_000, processes={4101: 80, 4202: 20})
    fake = FakeNvml([gpu])
    exporter, stoppers = build_exporter(
        "nvml",
        node_name=node,
        kubeconfig=str(cluster.kubeconfig),
        sysfs_root=str(tmp_path),
        podresources_socket=socket_path,
        enable_power_capping=False,
        nvml=fake,
        sharing_attribution=True,
        proc_root=str(proc),
    )
    exporter.clock = fake.clock
    try:

        def both_slices_charged() -> bool:
            fake.advance(1.0)
            exporter.sample_once()
            got = scrape(exporter.accountant)
            hi = sum(series(got, "lepton_pod_gpu_active_energy_joules_total", pod="slice-hi"))
            lo = sum(series(got, "lepton_pod_gpu_active_energy_joules_total", pod="slice-lo"))
            return hi > 0 and lo > 0

        wait_for(both_slices_charged, 30, "both slices' pods to be charged", interval=0.2)
        for _ in range(10):
            fake.advance(1.0)
            exporter.sample_once()
        got = scrape(exporter.accountant)
    finally:
        for stopper in stoppers:
            stopper()
        kubelet.stop(grace=None)
    hi = series(
        got,
        "lepton_pod_gpu_active_energy_joules_total",
        pod="slice-hi",
        attribution="sm_utilization",
    )
    lo = series(
        got,
        "lepton_pod_gpu_active_energy_joules_total",
        pod="slice-lo",
        attribution="sm_utilization",
    )
    assert hi and lo, got
    assert hi[0] / (hi[0] + lo[0]) == pytest.approx(0.8, abs=0.02)
    assert sum(series(got, "lepton_gpu_unattributed_energy_joules_total")) == 0.0


def test_the_dra_index_reads_resource_slices_where_the_api_serves_them(
    cluster: LocalCluster,
) -> None:
    """On an API server with resource.k8s.io the index maps a slice's devices; on one without
    (Kubernetes 1.33 serves the group only when enabled) it falls back to UUID-shaped names."""
    from lepton_exporter.kube import RESOURCE_API_VERSIONS, ResourceSliceIndex

    from lepton.kube import api_client

    served = cluster.kubectl("api-versions").stdout.split()
    version = next((v for v in RESOURCE_API_VERSIONS if f"resource.k8s.io/{v}" in served), None)
    slice_name = "lepton-test-gpus"
    if version is not None:
        device: dict[str, object] = {"name": "gpu-0"}
        attributes = {"uuid": {"string": "GPU-from-slice"}}
        if version == "v1beta1":
            device["basic"] = {"attributes": attributes}
        else:
            device["attributes"] = attributes
        body = {
            "apiVersion": f"resource.k8s.io/{version}",
            "kind": "ResourceSlice",
            "metadata": {"name": slice_name},
            "spec": {
                "driver": "gpu.nvidia.com",
                "nodeName": "a40-0",
                "pool": {"name": "a40-0", "generation": 1, "resourceSliceCount": 1},
                "devices": [device],
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    index = ResourceSliceIndex(api_client(str(cluster.kubeconfig)), "a40-0")
    try:
        index.refresh()
        expected = "GPU-from-slice" if version is not None else None
        assert index.uuid("gpu.nvidia.com", "a40-0", "gpu-0") == expected
        assert index.uuid("gpu.nvidia.com", "a40-0", "GPU-named") == "GPU-named"
    finally:
        if version is not None:
            cluster.kubectl("delete", "resourceslice", slice_name, "--wait=false")
