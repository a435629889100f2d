"""The model backend: estimated power for a fleet without meters, from profiles and pods."""

from __future__ import annotations

import pytest
from lepton_exporter.accounting import Accountant
from lepton_exporter.model import (
    ANNOTATION_GPU_UTILIZATION,
    FleetNode,
    FleetPod,
    ModelBackend,
    estimate_fleet,
    static_fleet,
)

from lepton.core.profiles import get_profile
from tests.support.exporter import scrape, series

A40 = get_profile("NVIDIA-A40")
NODES = [FleetNode("kwok-a40-0", "NVIDIA-A40", 2), FleetNode("kwok-t4-0", "Tesla-T4", 1)]


def test_an_empty_node_draws_its_profiles_idle_power() -> None:
    readings = estimate_fleet(NODES, [])
    assert len(readings) == 3
    assert {r.source for r in readings} == {"model"}
    a40 = [r for r in readings if r.node == "kwok-a40-0"]
    assert [r.power_watts for r in a40] == [A40.idle_watts, A40.idle_watts]
    t4 = next(r for r in readings if r.node == "kwok-t4-0")
    assert t4.power_watts == get_profile("Tesla-T4").idle_watts


def test_a_pod_holding_a_gpu_makes_it_busy_unless_annotated() -> None:
    pods = [
        FleetPod("ml", "train-0", "kwok-a40-0", 1),
        FleetPod("ml", "train-1", "kwok-a40-0", 1, annotations={ANNOTATION_GPU_UTILIZATION: "0.5"}),
    ]
    readings = estimate_fleet(NODES, pods)
    gpu0, gpu1 = (r for r in readings if r.node == "kwok-a40-0")
    assert gpu0.utilization_ratio == 1.0
    assert gpu0.power_watts == pytest.approx(A40.active_power_watts(1.0))
    assert gpu1.utilization_ratio == 0.5
    assert gpu1.power_watts == pytest.approx(A40.active_power_watts(0.5))
    assert gpu0.power_watts is not None and gpu1.power_watts is not None
    assert A40.idle_watts < gpu1.power_watts < gpu0.power_watts


def test_a_power_cap_annotation_lowers_the_estimate() -> None:
    capped = [FleetPod("ml", "t", "kwok-a40-0", 1, annotations={"lepton.dev/power-cap": "150"})]
    reading = estimate_fleet(NODES, capped)[0]
    assert reading.power_limit_watts == 150.0
    assert reading.power_watts == pytest.approx(A40.active_power_watts(1.0, 150.0))
    assert reading.power_watts is not None
    assert reading.power_watts < A40.active_power_watts(1.0)


def test_one_process_serves_the_whole_fleet_and_charges_each_pod() -> None:
    pods = [FleetPod("ml", "train-0", "kwok-a40-0", 2, container="trainer")]
    backend = ModelBackend(static_fleet(NODES, pods))
    accountant = Accountant()
    accountant.record(backend.read(), 0.0, "fleet")
    accountant.record(backend.read(), 60.0, "fleet")
    got = scrape(accountant)
    per_gpu_active = (A40.active_power_watts(1.0) - A40.idle_watts) * 60.0
    pod = series(
        got, "lepton_pod_gpu_active_energy_joules_total", pod="train-0", container="trainer"
    )
    assert pod == [pytest.approx(per_gpu_active)] * 2
    assert (
        sorted(series(got, "lepton_gpu_power_watts", source="model", node="kwok-a40-0"))
        == [pytest.approx(A40.active_power_watts(1.0))] * 2
    )
    assert len(series(got, "lepton_gpu_energy_joules_total", source="model")) == 3
    device = sum(series(got, "lepton_gpu_energy_joules_total", node="kwok-a40-0"))
    idle = sum(series(got, "lepton_gpu_idle_energy_joules_total", node="kwok-a40-0"))
    assert sum(pod) + idle == pytest.approx(device, rel=0.01)


def test_a_node_scoped_model_backend_serves_only_its_node() -> None:
    backend = ModelBackend(static_fleet(NODES, []), node="kwok-t4-0")
    assert {r.node for r in backend.read().gpus} == {"kwok-t4-0"}


def test_a_service_pod_is_as_busy_as_its_demand_on_that_gpu() -> None:
    # Found in review: without lepton.dev/gpu-utilization the model counted every pod holding
    # a GPU as fully busy, so a service at 10 % of an A40 was metered (and charged to its
    # budget) at the whole board's busy draw, not the u_m = u_ref / speed the scorer ranks it by.
    service = {
        "lepton.dev/workload-kind": "Service",
        "lepton.dev/reference-utilization-percent": "10.0",
        "lepton.dev/power-cap": "Auto",
    }
    pods = [
        FleetPod("web", "embed-0", "kwok-t4-0", 1, annotations=service),
        FleetPod(
            "ml", "train-0", "kwok-a40-0", 1, annotations={"lepton.dev/workload-kind": "Batch"}
        ),
    ]
    readings = estimate_fleet(NODES, pods)
    t4 = get_profile("Tesla-T4")
    reading = next(r for r in readings if r.node == "kwok-t4-0")
    limit = t4.energy_optimal_power_limit_watts
    u = 0.10 / t4.speed_at(limit)
    assert reading.utilization_ratio == pytest.approx(u)
    assert reading.power_watts == pytest.approx(t4.active_power_watts(u, limit))
    assert readings[0].utilization_ratio == 1.0  # batch stays fully busy
