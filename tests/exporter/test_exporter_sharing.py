"""Shared GPUs metered per pod: PIDs to pods, time-slicing/MPS, MIG and DRA, summing to the device.

Everything runs on the fake NVML (processes, utilisation samples behind a
timestamp cursor, running-process memory, MIG devices, pynvml's errors), a
recorded /proc tree under tmp_path, and a real gRPC pod-resources server on a
unix socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from lepton_exporter.accounting import Accountant
from lepton_exporter.kube import PodIdentity, dra_device_uuids
from lepton_exporter.main import Exporter
from lepton_exporter.nvml import NvmlBackend
from lepton_exporter.podresources import api_pb2, api_pb2_grpc
from lepton_exporter.podresources.client import (
    PodResourcesClient,
    add_dra_claim,
    fake_response,
    gpu_holders,
)
from lepton_exporter.procs import (
    REASON_OUTSIDE_KUBERNETES,
    REASON_UNRESOLVED_PID,
    CgroupRef,
    ProcPodResolver,
    parse_cgroup,
    process_start_ticks,
)
from lepton_exporter.readings import PodRef

from lepton.hw import fake_nvml
from lepton.hw.fake_nvml import FakeGpu, FakeNvml, mig_gpu
from tests.support.exporter import scrape, series

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
UID = "5f3e2c1a-7b4d-4e8f-9a0b-1c2d3e4f5a6b"
CID = "8c1d2b3a4f5e6d7c8b9a0f1e2d3c4b5a6978877665544332211ffeeddccbbaa9"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- PIDs to pods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "runtime"),
    [
        ("v2-systemd-containerd", "containerd"),
        ("v2-systemd-crio", "crio"),
        ("v2-cgroupfs-containerd", ""),
        ("v2-cgroupfs-crio", "crio"),
        ("v2-cgroupns-relative", "containerd"),
        ("v1-cgroupfs-containerd", ""),
        ("v1-systemd-containerd", "containerd"),
        ("v1-systemd-crio", "crio"),
    ],
)
def test_every_cgroup_shape_names_the_pod_and_container(fixture: str, runtime: str) -> None:
    ref = parse_cgroup((FIXTURES / f"{fixture}.txt").read_text())
    assert ref == CgroupRef(UID, CID, runtime)


def test_crio_conmon_is_the_pods_but_no_containers() -> None:
    assert parse_cgroup((FIXTURES / "v2-crio-conmon.txt").read_text()) == CgroupRef(UID, "", "")


@pytest.mark.parametrize("fixture", ["v2-host-service", "v1-host-session"])
def test_host_processes_are_outside_kubernetes(fixture: str) -> None:
    assert parse_cgroup((FIXTURES / f"{fixture}.txt").read_text()) is None


def test_the_start_time_is_field_22_whatever_the_command_name() -> None:
    fields = " ".join(str(n) for n in range(3, 53)).replace("3 ", "S ", 1)
    stat = f"4242 (python (worker) 1) {fields}"
    assert process_start_ticks(stat) == 22


def write_process(proc: Path, pid: int, start: int, cgroup: str) -> None:
    directory = proc / str(pid)
    directory.mkdir(parents=True, exist_ok=True)
    rest = ["S"] + ["0"] * 18 + [str(start)] + ["0"] * 30
    (directory / "stat").write_text(f"{pid} (python3) {' '.join(rest)}\n")
    (directory / "cgroup").write_text(cgroup)


def pod_cgroup(uid: str, container_id: str) -> str:
    slice_uid = uid.replace("-", "_")
    return (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{slice_uid}.slice/cri-containerd-{container_id}.scope\n"
    )


def uid(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{n:012x}"


def cid(n: int) -> str:
    return f"{n:064x}"


class Pods:
    """The node's pods by UID, as the API watcher indexes them."""

    def __init__(self) -> None:
        self.identities: dict[str, PodIdentity] = {}

    def add(self, n: int, pod: PodRef) -> None:
        self.identities[uid(n)] = PodIdentity(
            uid(n), pod.namespace, pod.pod, {cid(n): pod.container}, (pod.container,)
        )

    def lookup(self, pod_uid: str, container_id: str) -> PodRef | None:
        identity = self.identities.get(pod_uid)
        return None if identity is None else identity.container_ref(container_id)


POD_A = PodRef("ml", "train-a", "main")
POD_B = PodRef("ml", "infer-b", "main")
POD_C = PodRef("ml", "infer-c", "main")


def test_a_pid_is_read_once_then_cached_by_its_start_time(tmp_path: Path) -> None:
    pods = Pods()
    pods.add(1, POD_A)
    write_process(tmp_path, 101, 5000, pod_cgroup(uid(1), cid(1)))
    resolver = ProcPodResolver(pods.lookup, str(tmp_path))
    assert resolver.resolve(101) == POD_A
    assert resolver.resolve(101) == POD_A
    assert resolver.reads == 1


def test_a_recycled_pid_is_resolved_afresh(tmp_path: Path) -> None:
    pods = Pods()
    pods.add(1, POD_A)
    pods.add(2, POD_B)
    write_process(tmp_path, 101, 5000, pod_cgroup(uid(1), cid(1)))
    resolver = ProcPodResolver(pods.lookup, str(tmp_path))
    assert resolver.resolve(101) == POD_A
    write_process(tmp_path, 101, 9000, pod_cgroup(uid(2), cid(2)))  # same PID, new process
    assert resolver.resolve(101) == POD_B
    write_process(tmp_path, 101, 9500, "0::/system.slice/sshd.service\n")
    assert resolver.resolve(101) == REASON_OUTSIDE_KUBERNETES


def test_an_exited_process_keeps_its_pod_and_an_unseen_one_is_unresolved(tmp_path: Path) -> None:
    pods = Pods()
    pods.add(1, POD_A)
    write_process(tmp_path, 101, 5000, pod_cgroup(uid(1), cid(1)))
    resolver = ProcPodResolver(pods.lookup, str(tmp_path))
    assert resolver.resolve(101) == POD_A
    for name in ("stat", "cgroup"):
        (tmp_path / "101" / name).unlink()
    assert resolver.resolve(101) == POD_A
    assert resolver.resolve(777) == REASON_UNRESOLVED_PID
    # A pod the API does not know (yet) is unresolved, not outside Kubernetes.
    write_process(tmp_path, 102, 6000, pod_cgroup(uid(9), cid(9)))
    assert resolver.resolve(102) == REASON_UNRESOLVED_PID


# --- the invariant -----------------------------------------------------------------------


def check_invariant(got: Samples, uuid: str) -> float:
    """pods' active + idle + unattributed = device; pods' idle + unallocated = idle."""
    device = series(got, "lepton_gpu_energy_joules_total", gpu_uuid=uuid)[0]
    idle = series(got, "lepton_gpu_idle_energy_joules_total", gpu_uuid=uuid)[0]
    active = sum(series(got, "lepton_pod_gpu_active_energy_joules_total", gpu_uuid=uuid))
    unattributed = sum(series(got, "lepton_gpu_unattributed_energy_joules_total", gpu_uuid=uuid))
    pods_idle = sum(series(got, "lepton_pod_gpu_idle_energy_joules_total", gpu_uuid=uuid))
    unallocated = series(got, "lepton_gpu_unallocated_idle_energy_joules_total", gpu_uuid=uuid)[0]
    assert device > 0
    assert active + idle + unattributed == pytest.approx(device, rel=1e-9)
    assert pods_idle + unallocated == pytest.approx(idle, rel=1e-9)
    return device


def active(got: Samples, pod: PodRef, **labels: str) -> float:
    return sum(series(got, "lepton_pod_gpu_active_energy_joules_total", pod=pod.pod, **labels))


def idle(got: Samples, pod: PodRef) -> float:
    return sum(series(got, "lepton_pod_gpu_idle_energy_joules_total", pod=pod.pod))


class Node:
    """A fake GPU node: NVML, its /proc, its pods, and an accountant sampling every second."""

    def __init__(self, tmp_path: Path, gpus: list[FakeGpu]) -> None:
        self.fake = FakeNvml(gpus)
        self.backend = NvmlBackend(self.fake, "n1")
        self.backend.start()
        self.proc = tmp_path / "proc"
        self.proc.mkdir()
        self.pods = Pods()
        self.resolver = ProcPodResolver(self.pods.lookup, str(self.proc))
        self.accountant = Accountant()
        self.holders: dict[str, list[PodRef]] = {}

    def run(self, pid: int, n: int, pod: PodRef, start: int = 1000) -> None:
        self.pods.add(n, pod)
        write_process(self.proc, pid, start, pod_cgroup(uid(n), cid(n)))

    def sample(self, seconds: float = 1.0) -> None:
        self.fake.advance(seconds)
        self.accountant.record(
            self.backend.read(), self.fake.clock(), "n1", self.holders, self.resolver.resolve
        )

    def scrape(self) -> Samples:
        return scrape(self.accountant)


# --- time-slicing and MPS ------------------------------------------------------------------


def test_two_pods_time_sliced_at_80_and_20_percent_sm_get_80_20_of_the_active_energy(
    tmp_path: Path,
) -> None:
    gpu = FakeGpu(uuid="GPU-ts", power_mw=230_000)
    node = Node(tmp_path, [gpu])
    node.run(101, 1, POD_A)
    node.run(202, 2, POD_B)
    # Pod A holds one replica, pod B three: idle goes 1/4 : 3/4 whatever they run.
    node.holders = {"GPU-ts": [POD_A, POD_B, POD_B, POD_B]}
    gpu.processes = {101: 80, 202: 20}
    for _ in range(30):
        node.sample()
    got = node.scrape()
    check_invariant(got, "GPU-ts")
    a, b = active(got, POD_A), active(got, POD_B)
    assert a / (a + b) == pytest.approx(0.80, abs=0.02)
    assert b / (a + b) == pytest.approx(0.20, abs=0.02)
    assert series(got, "lepton_pod_gpu_active_energy_joules_total", attribution="sm_utilization")
    assert idle(got, POD_B) == pytest.approx(3 * idle(got, POD_A))


def test_the_timestamp_cursor_counts_each_utilisation_sample_once(tmp_path: Path) -> None:
    gpu = FakeGpu(uuid="GPU-ts", power_mw=230_000)
    node = Node(tmp_path, [gpu])
    node.run(101, 1, POD_A)
    node.run(202, 2, POD_B)
    node.holders = {"GPU-ts": [POD_A, POD_B]}
    gpu.processes = {101: 90, 202: 10}
    node.sample()
    node.sample()
    # Now B alone is busy; a backend re-reading old samples would still give A most of it.
    gpu.processes = {202: 50}
    before_a, before_b = active(node.scrape(), POD_A), active(node.scrape(), POD_B)
    node.sample()
    got = node.scrape()
    assert active(got, POD_A) == pytest.approx(before_a)
    assert active(got, POD_B) > before_b


def test_without_samples_memory_shares_then_an_equal_split_and_the_label_says_which(
    tmp_path: Path,
) -> None:
    gpu = FakeGpu(
        uuid="GPU-mps",
        power_mw=130_000,
        failing_calls={"nvmlDeviceGetProcessUtilization": fake_nvml.ERROR_NOT_FOUND},
        running={101: 3 << 30, 202: 1 << 30},
    )
    node = Node(tmp_path, [gpu])
    node.run(101, 1, POD_A)
    node.run(202, 2, POD_B)
    node.holders = {"GPU-mps": [POD_A, POD_B]}
    for _ in range(10):
        node.sample()
    got = node.scrape()
    check_invariant(got, "GPU-mps")
    a = active(got, POD_A, attribution="process_memory")
    b = active(got, POD_B, attribution="process_memory")
    assert a == pytest.approx(3 * b)
    # The driver lists no process at all: equal split, labelled so.
    gpu.running = {}
    for _ in range(10):
        node.sample()
    got = node.scrape()
    check_invariant(got, "GPU-mps")
    assert active(got, POD_A, attribution="equal") == pytest.approx(
        active(got, POD_B, attribution="equal")
    )
    assert active(got, POD_A, attribution="equal") > 0


def test_processes_that_are_no_holders_are_unattributed_with_their_reason(tmp_path: Path) -> None:
    gpu = FakeGpu(uuid="GPU-ts", power_mw=230_000)
    node = Node(tmp_path, [gpu])
    node.run(101, 1, POD_A)
    node.run(202, 2, POD_B)
    node.run(303, 3, POD_C)  # a pod that holds no replica of this GPU
    write_process(node.proc, 404, 1000, "0::/system.slice/dcgm.service\n")
    node.holders = {"GPU-ts": [POD_A, POD_B]}
    gpu.processes = {101: 40, 202: 20, 303: 20, 404: 10, 505: 10}  # 505: no /proc entry
    for _ in range(10):
        node.sample()
    got = node.scrape()
    device = check_invariant(got, "GPU-ts")
    unattributed = {
        reason: sum(series(got, "lepton_gpu_unattributed_energy_joules_total", reason=reason))
        for reason in ("pod_without_allocation", "process_outside_kubernetes", "unresolved_pid")
    }
    total_active = device - series(got, "lepton_gpu_idle_energy_joules_total")[0]
    assert unattributed["pod_without_allocation"] == pytest.approx(0.2 * total_active)
    assert unattributed["process_outside_kubernetes"] == pytest.approx(0.1 * total_active)
    assert unattributed["unresolved_pid"] == pytest.approx(0.1 * total_active)
    assert active(got, POD_A) == pytest.approx(0.4 * total_active)


def test_a_process_exiting_mid_interval_and_a_recycled_pid_keep_the_invariant(
    tmp_path: Path,
) -> None:
    gpu = FakeGpu(uuid="GPU-ts", power_mw=230_000)
    node = Node(tmp_path, [gpu])
    node.run(101, 1, POD_A, start=1000)
    node.run(202, 2, POD_B)
    node.holders = {"GPU-ts": [POD_A, POD_B]}
    gpu.processes = {101: 50, 202: 50}
    node.sample()
    node.sample()
    a_before = active(node.scrape(), POD_A)
    assert a_before > 0
    # Half an interval in, A's process exits: its samples stay, its /proc goes.
    node.fake.advance(0.5)
    gpu.processes = {202: 50}
    for name in ("stat", "cgroup"):
        (node.proc / "101" / name).unlink()
    node.sample(0.5)
    got = node.scrape()
    check_invariant(got, "GPU-ts")
    assert active(got, POD_A) > a_before  # charged for the half it ran
    assert sum(series(got, "lepton_gpu_unattributed_energy_joules_total")) == 0.0
    # PID 101 comes back as a process of pod C, which holds no replica here.
    node.run(101, 3, POD_C, start=8000)
    gpu.processes = {101: 50, 202: 50}
    a_after_exit = active(node.scrape(), POD_A)
    for _ in range(5):
        node.sample()
    got = node.scrape()
    check_invariant(got, "GPU-ts")
    assert active(got, POD_A) == pytest.approx(a_after_exit)  # A is no longer charged
    # C's half of the active energy: C holds no replica of this GPU.
    assert (
        series(got, "lepton_gpu_unattributed_energy_joules_total", reason="pod_without_allocation")[
            0
        ]
        > 0
    )


# --- MIG ------------------------------------------------------------------------------------


MIG_LAYOUT = [(3, "3g.40gb"), (2, "2g.20gb"), (1, "1g.10gb")]


def test_a_mig_3g_2g_1g_split_attributes_idle_3_2_1_of_7(tmp_path: Path) -> None:
    gpu = mig_gpu("GPU-mig", MIG_LAYOUT)
    node = Node(tmp_path, [gpu])
    m3, m2, m1 = (d.uuid for d in gpu.mig_devices if d is not None)
    node.holders = {m3: [POD_A], m2: [POD_B], m1: [POD_C]}
    gpu.power_mw = 50_000
    for _ in range(10):
        node.sample()
    got = node.scrape()
    check_invariant(got, "GPU-mig")
    total_idle = series(got, "lepton_gpu_idle_energy_joules_total")[0]
    assert idle(got, POD_A) == pytest.approx(total_idle * 3 / 7)
    assert idle(got, POD_B) == pytest.approx(total_idle * 2 / 7)
    assert idle(got, POD_C) == pytest.approx(total_idle * 1 / 7)
    # The seventh slice is unpartitioned: nobody's.
    assert series(got, "lepton_gpu_unallocated_idle_energy_joules_total")[0] == pytest.approx(
        total_idle / 7
    )
    # What the split attributes is a model, and the source label says so.
    assert series(got, "lepton_pod_gpu_idle_energy_joules_total", source="mig_model")
    assert len(series(got, "lepton_gpu_mig_energy_joules_total", source="mig_model")) == 3


def test_mig_active_energy_goes_to_slices_with_processes_by_size(tmp_path: Path) -> None:
    gpu = mig_gpu("GPU-mig", MIG_LAYOUT)
    node = Node(tmp_path, [gpu])
    d3, d2, d1 = (d for d in gpu.mig_devices if d is not None)
    node.holders = {d3.uuid: [POD_A], d2.uuid: [POD_B]}  # the 1g slice has no pod
    d3.running = {101: 1 << 30}
    d1.running = {909: 1 << 30}  # something runs on the unheld slice
    gpu.power_mw = 250_000
    for _ in range(10):
        node.sample()
    got = node.scrape()
    device = check_invariant(got, "GPU-mig")
    total_active = device - series(got, "lepton_gpu_idle_energy_joules_total")[0]
    assert active(got, POD_A, attribution="mig_slice_size") == pytest.approx(total_active * 3 / 4)
    assert active(got, POD_B) == 0.0
    assert series(
        got, "lepton_gpu_unattributed_energy_joules_total", reason="mig_slice_without_pod"
    ) == [pytest.approx(total_active / 4)]


def test_mig_errors_are_counted_and_the_other_slices_still_metered(tmp_path: Path) -> None:
    gpu = mig_gpu("GPU-mig", MIG_LAYOUT)
    gpu.mig_devices[1] = None  # an empty slot: NotFound, skipped silently
    node = Node(tmp_path, [gpu, FakeGpu(uuid="GPU-plain")])
    d3 = gpu.mig_devices[0]
    assert d3 is not None
    node.holders = {d3.uuid: [POD_A]}
    for _ in range(3):
        node.sample()
    got = node.scrape()
    check_invariant(got, "GPU-mig")
    assert len(series(got, "lepton_gpu_mig_energy_joules_total", gpu_uuid="GPU-mig")) == 2
    # An A40 without MIG answers NotSupported to nvmlDeviceGetMigMode: expected, no error series.
    assert series(got, "lepton_exporter_device_errors_total", call="nvmlDeviceGetMigMode") == []
    assert series(got, "lepton_exporter_device_errors_total", device="GPU-mig") == [1.0]


# --- DRA --------------------------------------------------------------------------------------


class FakeKubelet(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, response: api_pb2.ListPodResourcesResponse) -> None:
        self.response = response

    def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:  # noqa: N802
        return self.response


@pytest.fixture
def dra_kubelet(tmp_path: Path) -> Iterator[str]:
    response = fake_response([("ml", "plugin-pod", "main", ["GPU-plugin"])])
    add_dra_claim(
        response,
        "ml",
        "claim-pod",
        "main",
        "gpu-claim",
        [("gpu.nvidia.com", "n1", "gpu-0"), ("example.com/nic", "n1", "nic-0")],
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(FakeKubelet(response), server)  # type: ignore[no-untyped-call]
    socket_path = str(tmp_path / "kubelet.sock")
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    yield socket_path
    server.stop(grace=None)


# A ResourceSlice as the NVIDIA DRA driver publishes it (resource.k8s.io/v1beta1 shape).
SLICE_V1BETA1 = {
    "spec": {
        "driver": "gpu.nvidia.com",
        "nodeName": "n1",
        "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
        "devices": [
            {
                "name": "gpu-0",
                "basic": {
                    "attributes": {
                        "type": {"string": "gpu"},
                        "uuid": {"string": "GPU-claimed"},
                        "productName": {"string": "NVIDIA A40"},
                    }
                },
            },
        ],
    }
}
# The same device in the v1 (and v1beta2) shape: attributes moved up.
SLICE_V1 = {
    "spec": {
        "driver": "gpu.nvidia.com",
        "pool": {"name": "n1"},
        "devices": [
            {"name": "gpu-1-mig-0", "attributes": {"gpu.nvidia.com/uuid": {"string": "MIG-x"}}}
        ],
    }
}


def test_resource_slices_map_dra_devices_to_uuids_in_every_api_shape() -> None:
    assert dra_device_uuids([SLICE_V1BETA1, SLICE_V1]) == {
        ("gpu.nvidia.com", "n1", "gpu-0"): "GPU-claimed",
        ("gpu.nvidia.com", "n1", "gpu-1-mig-0"): "MIG-x",
    }


def test_a_gpu_held_only_through_a_resource_claim_is_metered(dra_kubelet: str) -> None:
    uuids = dra_device_uuids([SLICE_V1BETA1])
    client = PodResourcesClient(
        dra_kubelet, dra_uuid=lambda driver, pool, device: uuids.get((driver, pool, device))
    )
    fake = FakeNvml([FakeGpu(uuid="GPU-plugin"), FakeGpu(uuid="GPU-claimed", power_mw=200_000)])
    backend = NvmlBackend(fake, "n1")
    exporter = Exporter([backend], "n1", holders=client.gpu_holders, clock=fake.clock)
    try:
        for _ in range(5):
            fake.advance(1.0)
            exporter.sample_once()
    finally:
        client.close()
        backend.stop()
    got = scrape(exporter.accountant)
    claimed = PodRef("ml", "claim-pod", "main")
    device = check_invariant(got, "GPU-claimed")
    assert active(got, claimed, gpu_uuid="GPU-claimed", attribution="exclusive") == pytest.approx(
        device - series(got, "lepton_gpu_idle_energy_joules_total", gpu_uuid="GPU-claimed")[0]
    )
    assert (
        sum(series(got, "lepton_gpu_unattributed_energy_joules_total", gpu_uuid="GPU-claimed")) == 0
    )
    # The NIC claim is not a GPU; the device-plugin pod is still metered beside it.
    assert idle(got, PodRef("ml", "plugin-pod", "main")) > 0


def test_replicas_mig_devices_and_claims_all_become_holders() -> None:
    response = fake_response(
        [
            ("ml", "a", "c", ["GPU-ts::0", "GPU-ts::1"]),
            ("ml", "b", "c", ["GPU-ts::2"]),
            ("ml", "m", "c", ["MIG-one"]),
        ]
    )
    add_dra_claim(response, "ml", "d", "c", "claim", [("gpu.nvidia.com", "n1", "MIG-two")])
    holders = gpu_holders(response)
    assert holders == {
        "GPU-ts": [PodRef("ml", "a", "c"), PodRef("ml", "a", "c"), PodRef("ml", "b", "c")],
        "MIG-one": [PodRef("ml", "m", "c")],
        "MIG-two": [PodRef("ml", "d", "c")],
    }


# --- cardinality ------------------------------------------------------------------------------


def test_8_gpus_of_7_mig_slices_and_50_pods_stay_a_bounded_number_of_series(
    tmp_path: Path,
) -> None:
    gpus = [mig_gpu(f"GPU-{g}", [(1, "1g.10gb")] * 7) for g in range(8)]
    node = Node(tmp_path, gpus)
    devices = [d for gpu in gpus for d in gpu.mig_devices if d is not None]
    pods = [PodRef("ml", f"pod-{p:02d}", "main") for p in range(50)]
    for index, pod in enumerate(pods):
        node.holders[devices[index].uuid] = [pod]
        devices[index].running = {10_000 + index: 1 << 30}
    for index in range(len(devices)):
        pid = 10_000 + index
        if index < len(pods):
            node.run(pid, index + 1, pods[index])
    for _ in range(3):
        node.sample()
    got = node.scrape()
    by_name: dict[str, int] = {}
    for name, _labels in got:
        by_name[name] = by_name.get(name, 0) + 1
    assert by_name["lepton_pod_gpu_active_energy_joules_total"] == 50  # one method per pod here
    assert by_name["lepton_pod_gpu_idle_energy_joules_total"] == 50
    assert by_name["lepton_gpu_mig_energy_joules_total"] == 56
    assert by_name["lepton_gpu_energy_joules_total"] == 8
    assert by_name["lepton_gpu_unattributed_energy_joules_total"] == 8 * 5  # one per reason
    # Bounded: 18 per GPU (5 reasons included), 1 per MIG device, per pod one idle and at
    # most 4 active (one per attribution method), and the exporter's own up series.
    bound = 8 * 18 + 56 + 50 * (1 + 4) + 1
    gpu_and_pod = sum(v for k, v in by_name.items() if k.startswith(("lepton_gpu", "lepton_pod")))
    assert gpu_and_pod + by_name.get("lepton_exporter_up", 0) <= bound


def test_mig_devices_named_by_the_older_parent_and_instance_ids_are_mapped_too(
    tmp_path: Path,
) -> None:
    gpu = mig_gpu("GPU-mig", MIG_LAYOUT)
    node = Node(tmp_path, [gpu])
    d3 = gpu.mig_devices[0]
    assert d3 is not None
    # Device plugins before R470 drivers: MIG-<parent UUID>/<GPU instance>/<compute instance>.
    node.holders = {f"MIG-GPU-mig/{d3.gpu_instance_id}/0": [POD_A]}
    for _ in range(5):
        node.sample()
    got = node.scrape()
    check_invariant(got, "GPU-mig")
    total_idle = series(got, "lepton_gpu_idle_energy_joules_total")[0]
    assert idle(got, POD_A) == pytest.approx(total_idle * 3 / 7)


def test_a_process_seen_only_while_the_gpu_idled_is_still_charged_after_it_exits(
    tmp_path: Path,
) -> None:
    """Processes are resolved on every sample, not only when there is active energy to split."""
    gpu = FakeGpu(uuid="GPU-ts", power_mw=20_000)  # below the A40's idle: no active energy
    node = Node(tmp_path, [gpu])
    node.run(101, 1, POD_A)
    node.run(202, 2, POD_B)
    node.holders = {"GPU-ts": [POD_A, POD_B]}
    gpu.processes = {101: 50, 202: 50}
    node.sample()
    node.sample()
    assert active(node.scrape(), POD_A) == 0.0
    # A's process exits; the next interval is busy, and its samples still name PID 101.
    for name in ("stat", "cgroup"):
        (node.proc / "101" / name).unlink()
    gpu.power_mw = 230_000
    node.sample()
    got = node.scrape()
    check_invariant(got, "GPU-ts")
    assert active(got, POD_A) == pytest.approx(active(got, POD_B))
    assert series(got, "lepton_gpu_unattributed_energy_joules_total", reason="unresolved_pid") == [
        0.0
    ]
