"""The one fake NVML agrees with the real ``pynvml``: its calls, constants, errors and types."""

from __future__ import annotations

import inspect

import pynvml
import pytest

from lepton.core.profiles import get_profile, is_known
from lepton.hw.fake_nvml import FakeGpu, FakeNvml, a40_fleet, profile_fleet
from lepton.hw.nvml import error_label, open_gpus


def fake_calls() -> list[str]:
    return [
        name
        for name, _ in inspect.getmembers(FakeNvml, inspect.isfunction)
        if name.startswith("nvml")
    ]


@pytest.mark.parametrize("call", fake_calls())
def test_every_call_the_fake_answers_is_a_real_pynvml_call(call: str) -> None:
    assert callable(getattr(pynvml, call, None)), f"pynvml has no {call}"


def test_the_fake_carries_pynvml_own_constants_and_error_classes() -> None:
    fake = a40_fleet(1)
    for name in ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_GPU_IS_LOST", "NVML_CLOCK_SM"):
        assert getattr(fake, name) == getattr(pynvml, name)
    assert fake.NVMLError_NotSupported is pynvml.NVMLError_NotSupported
    fake.gpus[0].lost = True
    fake.nvmlInit()
    with pytest.raises(pynvml.NVMLError_GpuIsLost) as raised:
        fake.nvmlDeviceGetPowerUsage(fake.gpus[0])
    assert error_label(raised.value) == "gpu_is_lost"


def test_names_and_uuids_are_text_as_current_bindings_return_them() -> None:
    fake = FakeNvml([FakeGpu(uuid="GPU-a", name="NVIDIA A40")])
    (gpu,) = open_gpus(fake)
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    assert isinstance(fake.nvmlDeviceGetName(handle), str)
    assert isinstance(fake.nvmlDeviceGetUUID(handle), str)
    assert (gpu.uuid, gpu.name) == ("GPU-a", "NVIDIA A40")


@pytest.mark.parametrize("model", ["A40", "H100", "L4"])
def test_a_profile_fleet_follows_its_profile(model: str) -> None:
    profile = get_profile(model)
    fake = profile_fleet(model)
    (gpu,) = open_gpus(fake)
    assert is_known(gpu.name) and get_profile(gpu.name) == profile
    assert gpu.power_limit_range_watts() == (
        profile.min_power_limit_watts,
        profile.max_power_limit_watts,
    )
    for limit in (profile.min_power_limit_watts, profile.energy_optimal_power_limit_watts):
        gpu.set_power_limit_watts(limit)
        assert gpu.power_watts() == pytest.approx(profile.busy_power_at(limit), abs=1e-3)
        before, start = gpu.energy_joules_total(), fake.clock()
        fake.run_step()
        seconds = fake.clock() - start
        assert seconds == pytest.approx(0.05 / profile.speed_at(limit))
        assert gpu.energy_joules_total() - before == pytest.approx(
            profile.busy_power_at(limit) * seconds, abs=1e-3
        )
