"""Power caps: set on the GPUs a job's pods hold, verified by reading back, restored after."""

from __future__ import annotations

from collections.abc import Mapping

from lepton_exporter.accounting import Accountant
from lepton_exporter.nvml import NvmlBackend
from lepton_exporter.powercap import PowerCapper
from lepton_exporter.readings import PodRef

from lepton.core.names import ANNOTATION_POWER_LIMIT_WATTS
from lepton.core.profiles import get_profile
from lepton.hw import fake_nvml
from lepton.hw.fake_nvml import FakeGpu, FakeNvml
from tests.support.exporter import scrape, series

NODE = "gpu-node-1"
JOB_POD = PodRef("ml", "train-0", "trainer")
OTHER_POD = PodRef("ml", "infer-0", "server")


class Node:
    """One node: fake GPUs, the backend, the capper and the pods' annotations."""

    def __init__(self, *gpus: FakeGpu) -> None:
        self.fake = FakeNvml(list(gpus))
        self.backend = NvmlBackend(self.fake, NODE)
        self.backend.start()
        self.accountant = Accountant()
        self.capper = PowerCapper(self.fake, self.backend.handle_for_uuid, NODE)
        self.annotations: dict[PodRef, dict[str, str]] = {}

    def annotations_for(self, pod: PodRef) -> Mapping[str, str]:
        return self.annotations.get(pod, {})

    def reconcile(self, holders: dict[str, list[PodRef]]) -> None:
        sample = self.backend.read()
        self.accountant.record(sample, self.fake.clock(), NODE, holders)
        self.capper.reconcile(sample.gpus, holders, self.annotations_for, self.accountant)

    def limit_watts(self, index: int) -> float:
        return self.fake.gpus[index].power_limit_mw / 1000


def test_a_jobs_power_cap_is_applied_to_its_gpus_only_and_restored_when_it_leaves() -> None:
    node = Node(FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b"))
    node.annotations[JOB_POD] = {"lepton.dev/power-cap": "175"}
    node.reconcile({"GPU-a": [JOB_POD], "GPU-b": [OTHER_POD]})
    assert node.limit_watts(0) == 175.0
    assert node.limit_watts(1) == 300.0
    assert series(scrape(node.accountant), "lepton_gpu_power_cap_watts") == [175.0]

    node.reconcile({"GPU-a": [JOB_POD]})  # steady state: no new NVML writes
    assert len(node.fake.set_limit_calls) == 1

    node.reconcile({"GPU-b": [OTHER_POD]})  # the job's pod left
    assert node.limit_watts(0) == 300.0
    assert series(scrape(node.accountant), "lepton_gpu_power_cap_watts") == []


def test_auto_means_the_profiles_energy_optimal_limit() -> None:
    node = Node(FakeGpu(uuid="GPU-a"))
    node.annotations[JOB_POD] = {"lepton.dev/power-cap": "Auto"}
    node.reconcile({"GPU-a": [JOB_POD]})
    assert node.limit_watts(0) == get_profile("A40").energy_optimal_power_limit_watts


def test_an_exhausted_budgets_cap_wins_when_lower_and_is_clamped_to_the_gpus_floor() -> None:
    node = Node(FakeGpu(uuid="GPU-a"))
    node.annotations[JOB_POD] = {"lepton.dev/power-cap": "200", ANNOTATION_POWER_LIMIT_WATTS: "60"}
    node.reconcile({"GPU-a": [JOB_POD]})
    assert node.limit_watts(0) == 100.0  # the A40's floor


def test_a_gpu_lepton_never_capped_keeps_the_admins_limit() -> None:
    node = Node(FakeGpu(uuid="GPU-a", power_limit_mw=250_000))
    node.reconcile({"GPU-a": [OTHER_POD]})
    assert node.limit_watts(0) == 250.0
    assert node.fake.set_limit_calls == []


def test_a_limit_that_does_not_read_back_is_counted_and_not_reported() -> None:
    node = Node(FakeGpu(uuid="GPU-a", ignore_set_limit=True))
    node.annotations[JOB_POD] = {"lepton.dev/power-cap": "150"}
    node.reconcile({"GPU-a": [JOB_POD]})
    got = scrape(node.accountant)
    assert series(got, "lepton_gpu_power_cap_watts") == []
    assert series(
        got, "lepton_exporter_device_errors_total", call="verify_power_limit", error="mismatch"
    ) == [1.0]


def test_without_privileges_the_cap_is_counted_as_no_permission_and_nothing_dies() -> None:
    node = Node(
        FakeGpu(
            uuid="GPU-a",
            failing_calls={"nvmlDeviceSetPowerManagementLimit": fake_nvml.ERROR_NO_PERMISSION},
        )
    )
    node.annotations[JOB_POD] = {"lepton.dev/power-cap": "150"}
    node.reconcile({"GPU-a": [JOB_POD]})
    assert node.limit_watts(0) == 300.0
    assert series(
        scrape(node.accountant),
        "lepton_exporter_device_errors_total",
        call="nvmlDeviceSetPowerManagementLimit",
        error="no_permission",
    ) == [1.0]


def test_shutdown_restores_every_gpu_lepton_capped() -> None:
    node = Node(FakeGpu(uuid="GPU-a"), FakeGpu(uuid="GPU-b"))
    node.annotations[JOB_POD] = {"lepton.dev/power-cap": "150"}
    node.reconcile({"GPU-a": [JOB_POD], "GPU-b": [JOB_POD]})
    assert (node.limit_watts(0), node.limit_watts(1)) == (150.0, 150.0)
    node.capper.restore_all(node.accountant)
    assert (node.limit_watts(0), node.limit_watts(1)) == (300.0, 300.0)
    assert node.capper.capped == {}
