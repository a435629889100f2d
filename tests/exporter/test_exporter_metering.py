"""The metering arithmetic: counter wrap and reset, integration, and the attribution split."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from lepton_exporter.accounting import Accountant
from lepton_exporter.nvml import NvmlBackend
from lepton_exporter.readings import GpuReading, PodRef, Sample

from lepton.core.metering import (
    integrate_power_joules,
    resetting_counter_delta,
    split_by_share,
    split_idle_and_active,
    wrapping_counter_delta,
)
from lepton.hw.fake_nvml import FakeGpu, FakeNvml
from tests.support.exporter import scrape, series

MAX_RANGE_UJ = 262_143_328_850  # a real max_energy_range_uj of an Intel package zone


def test_a_wrapped_rapl_counter_counts_what_remained_plus_what_came_after_zero() -> None:
    assert wrapping_counter_delta(MAX_RANGE_UJ - 100, 50, MAX_RANGE_UJ) == 150
    assert wrapping_counter_delta(1_000, 1_500, MAX_RANGE_UJ) == 500


def test_a_decrease_without_a_known_range_reads_as_a_reset() -> None:
    assert wrapping_counter_delta(1_000, 40, 0) == 40


def test_a_reset_counter_counts_only_what_came_after_the_reset() -> None:
    assert resetting_counter_delta(5_000.0, 300.0) == 300.0
    assert resetting_counter_delta(5_000.0, 5_250.0) == 250.0


def test_power_is_integrated_with_the_trapezoid_rule() -> None:
    assert integrate_power_joules(100.0, 200.0, 10.0) == 1500.0
    assert integrate_power_joules(100.0, 200.0, 0.0) == 0.0


def test_idle_never_exceeds_what_the_device_spent() -> None:
    assert split_idle_and_active(1000.0, 30.0, 10.0) == (300.0, 700.0)
    assert split_idle_and_active(200.0, 30.0, 10.0) == (200.0, 0.0)


def test_active_energy_is_split_by_share_and_never_copied() -> None:
    split = split_by_share(900.0, {"a": 0.6, "b": 0.3})
    assert split == {"a": pytest.approx(600.0), "b": pytest.approx(300.0)}
    assert split_by_share(900.0, {"a": 0.0, "b": 0.0}) == {"a": 450.0, "b": 450.0}
    assert split_by_share(900.0, {}) == {}


@given(
    st.floats(min_value=0, max_value=1e6),
    st.dictionaries(st.integers(0, 20), st.floats(min_value=0, max_value=1), min_size=1),
)
@example(0.5, {0: 5e-324})  # a subnormal share once underflowed to zero joules
def test_shares_always_add_up_to_the_whole(active: float, shares: dict[int, float]) -> None:
    assert sum(split_by_share(active, shares).values()) == pytest.approx(active, rel=1e-9, abs=1e-6)


POD_A = PodRef("team-a", "train-0", "trainer")
POD_B = PodRef("team-b", "infer-0", "server")
POD_C = PodRef("team-b", "infer-1", "server")


def shared_gpu_run(
    holders: dict[str, list[PodRef]], pid_to_pod: dict[int, PodRef], steps: int = 30
) -> Accountant:
    """A time-sliced A40 with changing load and processes, sampled every second."""
    gpu = FakeGpu(uuid="GPU-shared", power_mw=30_000)
    fake = FakeNvml([gpu, FakeGpu(uuid="GPU-whole", power_mw=250_000)])
    backend = NvmlBackend(fake, "n1")
    backend.start()
    accountant = Accountant()
    for step in range(steps):
        gpu.power_mw = 60_000 + (step % 7) * 25_000
        gpu.processes = {101: 10 + step % 5 * 10, 202: 40, 303: 5} if step % 4 else {}
        fake.advance(1.0)
        accountant.record(
            backend.read(),
            now=fake.clock(),
            node="n1",
            holders=holders,
            resolve_pid=pid_to_pod.get,
        )
    return accountant


def test_per_pod_active_plus_idle_equals_the_device_total_within_one_percent() -> None:
    accountant = shared_gpu_run(
        {"GPU-shared": [POD_A, POD_B, POD_C], "GPU-whole": [POD_A]},
        {101: POD_A, 202: POD_B, 303: POD_C},
    )
    got = scrape(accountant)
    for uuid in ("GPU-shared", "GPU-whole"):
        device = series(got, "lepton_gpu_energy_joules_total", gpu_uuid=uuid)[0]
        idle = series(got, "lepton_gpu_idle_energy_joules_total", gpu_uuid=uuid)[0]
        unattributed = series(got, "lepton_gpu_unattributed_energy_joules_total", gpu_uuid=uuid)
        pods = series(got, "lepton_pod_gpu_active_energy_joules_total", gpu_uuid=uuid)
        assert device > 0
        assert sum(unattributed) == 0.0
        assert len(unattributed) == 5  # one series per reason, from the start
        assert sum(pods) + idle == pytest.approx(device, rel=0.01)
    # The whole GPU is one pod's: all its active energy, none of its idle.
    whole = series(got, "lepton_gpu_energy_joules_total", gpu_uuid="GPU-whole")[0]
    assert series(got, "lepton_pod_gpu_active_energy_joules_total", gpu_uuid="GPU-whole") == [
        pytest.approx(whole - 30.0 * 29)
    ]


def test_a_shared_gpu_is_split_by_sm_share() -> None:
    accountant = Accountant()
    reading = GpuReading(
        node="n1",
        uuid="GPU-s",
        model="NVIDIA A40",
        source="nvml",
        power_watts=130.0,
        idle_watts=30.0,
        process_sm_shares={1: 0.75, 2: 0.25},
    )
    holders = {"GPU-s": [POD_A, POD_B]}
    resolve = {1: POD_A, 2: POD_B}.get
    accountant.record(Sample("nvml", True, gpus=[reading]), 0.0, "n1", holders, resolve)
    accountant.record(Sample("nvml", True, gpus=[reading]), 10.0, "n1", holders, resolve)
    got = scrape(accountant)
    assert series(got, "lepton_gpu_idle_energy_joules_total") == [pytest.approx(300.0)]
    assert series(got, "lepton_pod_gpu_active_energy_joules_total", pod="train-0") == [
        pytest.approx(750.0)
    ]
    assert series(got, "lepton_pod_gpu_active_energy_joules_total", pod="infer-0") == [
        pytest.approx(250.0)
    ]


def test_processes_outside_the_gpus_pods_stay_unattributed() -> None:
    accountant = Accountant()
    reading = GpuReading(
        node="n1",
        uuid="GPU-s",
        model="NVIDIA A40",
        source="nvml",
        power_watts=130.0,
        idle_watts=30.0,
        process_sm_shares={1: 0.5, 999: 0.5},
    )
    holders = {"GPU-s": [POD_A, POD_B]}
    resolve = {1: POD_A}.get
    for now in (0.0, 10.0):
        accountant.record(Sample("nvml", True, gpus=[reading]), now, "n1", holders, resolve)
    got = scrape(accountant)
    assert series(got, "lepton_gpu_unattributed_energy_joules_total", reason="unresolved_pid") == [
        pytest.approx(500.0)
    ]
    assert series(got, "lepton_pod_gpu_active_energy_joules_total", pod="train-0") == [
        pytest.approx(500.0)
    ]
    assert series(got, "lepton_pod_gpu_active_energy_joules_total", pod="infer-0") == []
    # Idle goes by allocation, whatever the processes did: half each.
    assert series(got, "lepton_pod_gpu_idle_energy_joules_total", pod="infer-0") == [
        pytest.approx(150.0)
    ]


def test_a_gpu_no_pod_holds_charges_nobody() -> None:
    accountant = Accountant()
    reading = GpuReading(
        node="n1",
        uuid="GPU-x",
        model="NVIDIA A40",
        source="nvml",
        power_watts=100.0,
        idle_watts=30.0,
    )
    for now in (0.0, 10.0):
        accountant.record(Sample("nvml", True, gpus=[reading]), now, "n1", {}, None)
    got = scrape(accountant)
    assert series(got, "lepton_pod_gpu_active_energy_joules_total") == []
    assert series(
        got, "lepton_gpu_unattributed_energy_joules_total", reason="no_pod_holds_gpu"
    ) == [pytest.approx(700.0)]
    assert series(got, "lepton_gpu_unallocated_idle_energy_joules_total") == [pytest.approx(300.0)]


def test_a_departed_pods_counter_is_kept_for_a_while_then_dropped() -> None:
    accountant = Accountant(pod_retention_seconds=60.0)
    reading = GpuReading(
        node="n1",
        uuid="GPU-x",
        model="NVIDIA A40",
        source="nvml",
        power_watts=100.0,
        idle_watts=30.0,
    )
    accountant.record(Sample("nvml", True, gpus=[reading]), 0.0, "n1", {"GPU-x": [POD_A]})
    accountant.record(Sample("nvml", True, gpus=[reading]), 10.0, "n1", {"GPU-x": [POD_A]})
    accountant.record(Sample("nvml", True, gpus=[reading]), 30.0, "n1", {})
    assert series(scrape(accountant), "lepton_pod_gpu_active_energy_joules_total") == [
        pytest.approx(700.0)
    ]
    accountant.record(Sample("nvml", True, gpus=[reading]), 80.0, "n1", {})
    assert series(scrape(accountant), "lepton_pod_gpu_active_energy_joules_total") == []
