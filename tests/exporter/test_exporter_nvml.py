"""The NVML backend over a fake NVML: readings, energy, and every failure a GPU node throws."""

from __future__ import annotations

import pytest
from lepton_exporter.accounting import Accountant
from lepton_exporter.nvml import NvmlBackend

from lepton.core.profiles import get_profile
from lepton.hw import fake_nvml
from lepton.hw.fake_nvml import FakeGpu, FakeNvml
from lepton.hw.nvml import NvmlUnavailableError
from tests.support.exporter import scrape, series

NODE = "gpu-node-1"


def started(fake: FakeNvml) -> tuple[NvmlBackend, Accountant]:
    backend = NvmlBackend(fake, NODE)
    backend.start()
    return backend, Accountant()


def sample(backend: NvmlBackend, accountant: Accountant, fake: FakeNvml) -> None:
    accountant.record(backend.read(), now=fake.clock(), node=NODE)


def test_reads_every_gpu_keyed_by_uuid_in_base_units() -> None:
    fake = FakeNvml(
        [
            FakeGpu(
                uuid="GPU-a",
                power_mw=123_456,
                power_limit_mw=250_000,
                utilization_percent=87,
                temperature_celsius=61,
                sm_clock_mhz=1740,
            ),
            FakeGpu(uuid="GPU-b"),
        ]
    )
    backend, accountant = started(fake)
    sample(backend, accountant, fake)
    got = scrape(accountant)
    labels = {"gpu_uuid": "GPU-a", "gpu_model": "NVIDIA A40", "source": "nvml", "node": NODE}
    assert series(got, "lepton_gpu_power_watts", **labels) == [pytest.approx(123.456)]
    assert series(got, "lepton_gpu_power_limit_watts", **labels) == [250.0]
    assert series(got, "lepton_gpu_power_limit_min_watts", **labels) == [100.0]
    assert series(got, "lepton_gpu_power_limit_max_watts", **labels) == [300.0]
    assert series(got, "lepton_gpu_power_limit_default_watts", **labels) == [300.0]
    assert series(got, "lepton_gpu_utilization_ratio", **labels) == [pytest.approx(0.87)]
    assert series(got, "lepton_gpu_temperature_celsius", **labels) == [61.0]
    assert series(got, "lepton_gpu_sm_clock_hertz", **labels) == [1.74e9]
    assert series(got, "lepton_gpu_up", gpu_uuid="GPU-b") == [1.0]
    assert series(got, "lepton_exporter_up", node=NODE, source="nvml") == [1.0]


def test_energy_comes_from_the_gpus_own_counter() -> None:
    fake = FakeNvml([FakeGpu(uuid="GPU-a", power_mw=200_000)])
    backend, accountant = started(fake)
    sample(backend, accountant, fake)
    fake.advance(10.0)
    # The counter, not the instantaneous power, is what counts: change the power
    # reading so that integrating it would give a different answer.
    fake.gpus[0].power_mw = 50_000
    sample(backend, accountant, fake)
    got = scrape(accountant)
    assert series(got, "lepton_gpu_energy_joules_total", gpu_uuid="GPU-a") == [
        pytest.approx(2000.0)
    ]


def test_energy_is_integrated_from_power_where_the_gpu_has_no_counter() -> None:
    fake = FakeNvml([FakeGpu(uuid="GPU-p100", has_energy_counter=False, power_mw=100_000)])
    backend, accountant = started(fake)
    sample(backend, accountant, fake)
    fake.advance(10.0)
    fake.gpus[0].power_mw = 200_000
    sample(backend, accountant, fake)
    fake.advance(10.0)
    sample(backend, accountant, fake)
    got = scrape(accountant)
    # Trapezoid: (100 + 200) / 2 * 10 + 200 * 10.
    assert series(got, "lepton_gpu_energy_joules_total", gpu_uuid="GPU-p100") == [
        pytest.approx(3500.0)
    ]
    # "Not supported" is counted once, then the call is no longer made.
    assert series(
        got,
        "lepton_exporter_device_errors_total",
        device="GPU-p100",
        call="nvmlDeviceGetTotalEnergyConsumption",
        error="not_supported",
    ) == [1.0]


def test_counter_reset_by_a_driver_reload_keeps_the_total_rising() -> None:
    fake = FakeNvml([FakeGpu(uuid="GPU-a", power_mw=100_000, energy_mj=5_000_000)])
    backend, accountant = started(fake)
    sample(backend, accountant, fake)
    fake.advance(10.0)
    sample(backend, accountant, fake)  # +1000 J
    fake.reload_driver()
    fake.advance(3.0)  # 300 J since the reload
    sample(backend, accountant, fake)
    got = scrape(accountant)
    assert series(got, "lepton_gpu_energy_joules_total", gpu_uuid="GPU-a") == [
        pytest.approx(1300.0)
    ]


def test_a_lost_gpu_degrades_only_itself_and_comes_back() -> None:
    fake = FakeNvml(
        [FakeGpu(uuid="GPU-a", power_mw=100_000), FakeGpu(uuid="GPU-b", power_mw=100_000)]
    )
    backend, accountant = started(fake)
    sample(backend, accountant, fake)
    fake.gpus[0].lost = True
    fake.advance(10.0)
    sample(backend, accountant, fake)
    got = scrape(accountant)
    assert series(got, "lepton_gpu_up", gpu_uuid="GPU-a") == [0.0]
    assert series(got, "lepton_gpu_power_watts", gpu_uuid="GPU-a") == []
    assert series(got, "lepton_gpu_up", gpu_uuid="GPU-b") == [1.0]
    assert series(got, "lepton_gpu_energy_joules_total", gpu_uuid="GPU-b") == [
        pytest.approx(1000.0)
    ]
    assert series(
        got, "lepton_exporter_device_errors_total", device="GPU-a", error="gpu_is_lost"
    ) == [1.0]
    assert series(got, "lepton_exporter_up", source="nvml") == [1.0]

    fake.gpus[0].lost = False
    fake.advance(10.0)
    sample(backend, accountant, fake)
    got = scrape(accountant)
    assert series(got, "lepton_gpu_up", gpu_uuid="GPU-a") == [1.0]
    # The counter kept running while the GPU was unreachable; that energy was spent.
    assert series(got, "lepton_gpu_energy_joules_total", gpu_uuid="GPU-a") == [
        pytest.approx(2000.0)
    ]


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (fake_nvml.ERROR_NO_PERMISSION, "no_permission"),
        (fake_nvml.ERROR_NOT_SUPPORTED, "not_supported"),
        (fake_nvml.ERROR_UNKNOWN, "unknown"),
        (fake_nvml.ERROR_FUNCTION_NOT_FOUND, "function_not_found"),
    ],
)
def test_a_failing_reading_is_counted_and_the_others_still_served(code: int, label: str) -> None:
    fake = FakeNvml(
        [
            FakeGpu(
                uuid="GPU-a",
                temperature_celsius=50,
                failing_calls={"nvmlDeviceGetPowerUsage": code},
            )
        ]
    )
    backend, accountant = started(fake)
    sample(backend, accountant, fake)
    got = scrape(accountant)
    assert series(got, "lepton_gpu_power_watts", gpu_uuid="GPU-a") == []
    assert series(got, "lepton_gpu_temperature_celsius", gpu_uuid="GPU-a") == [50.0]
    assert series(got, "lepton_gpu_up", gpu_uuid="GPU-a") == [1.0]
    assert series(
        got,
        "lepton_exporter_device_errors_total",
        device="GPU-a",
        call="nvmlDeviceGetPowerUsage",
        error=label,
    ) == [1.0]


def test_an_unloaded_driver_marks_the_backend_down_until_it_returns() -> None:
    fake = FakeNvml([FakeGpu(uuid="GPU-a", power_mw=100_000)])
    backend, accountant = started(fake)
    sample(backend, accountant, fake)
    fake.initialized = False  # the driver went away under us
    fake.init_error = fake_nvml.ERROR_DRIVER_NOT_LOADED
    sample(backend, accountant, fake)  # count fails: down, shut down
    sample(backend, accountant, fake)  # re-init fails: still down
    got = scrape(accountant)
    assert series(got, "lepton_exporter_up", source="nvml") == [0.0]
    assert sum(series(got, "lepton_exporter_device_errors_total", source="nvml")) == 2.0

    fake.init_error = None
    fake.reload_driver()
    fake.advance(5.0)
    sample(backend, accountant, fake)
    got = scrape(accountant)
    assert series(got, "lepton_exporter_up", source="nvml") == [1.0]
    # The counter restarted at 0 and holds 500 J since; the reset is no negative jump.
    assert series(got, "lepton_gpu_energy_joules_total", gpu_uuid="GPU-a") == [pytest.approx(500.0)]


def test_a_machine_without_nvml_fails_at_start_with_the_fix() -> None:
    fake = FakeNvml([], init_error=fake_nvml.ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(NvmlUnavailableError, match=r"library_not_found.*--backend model"):
        NvmlBackend(fake, NODE).start()


def test_the_real_pynvml_without_a_gpu_is_reported_as_unavailable() -> None:
    import pynvml

    with pytest.raises(NvmlUnavailableError, match="NVIDIA driver"):
        NvmlBackend(pynvml, NODE).start()


class BytesNvml(FakeNvml):
    """Older nvidia-ml-py releases return names and UUIDs as bytes."""

    def nvmlDeviceGetName(self, handle: object) -> bytes:  # noqa: N802 - pynvml's name
        return super().nvmlDeviceGetName(handle).encode()

    def nvmlDeviceGetUUID(self, handle: object) -> bytes:  # noqa: N802 - pynvml's name
        return super().nvmlDeviceGetUUID(handle).encode()


def test_names_and_uuids_in_bytes_from_older_bindings_are_read_as_text() -> None:
    # Failed before lepton.hw.nvml.as_text: str(b"NVIDIA A40") is "b'NVIDIA A40'", an
    # unknown model (the default profile's idle power) and a UUID no pod resource matches.
    backend, _ = started(BytesNvml([FakeGpu(uuid="GPU-a", name="NVIDIA A40")]))
    (reading,) = backend.read().gpus
    assert (reading.uuid, reading.model) == ("GPU-a", "NVIDIA A40")
    assert reading.idle_watts == get_profile("A40").idle_watts
