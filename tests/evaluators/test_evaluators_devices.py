"""GPU discovery and telemetry: silent without a driver, correct arithmetic with one."""

from __future__ import annotations

import logging
import sys
import time
import types
import warnings
from collections.abc import Iterator

import pytest

from paretotune.evaluators import devices


@pytest.fixture
def fresh_nvml() -> Iterator[None]:
    devices._reset_for_tests()
    yield
    devices._reset_for_tests()


def _no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        raise NVMLError("NVML Shared Library Not Found")

    fake.NVMLError = NVMLError  # type: ignore[attr-defined]
    fake.nvmlInit = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)


def test_without_a_driver_everything_is_empty_and_quiet(
    fresh_nvml: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _no_driver(monkeypatch)
    caplog.set_level(logging.INFO, logger="paretotune")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert devices.list_gpus() == []
        assert not devices.nvml_available()
        for _ in range(3):
            result, tel = devices.sample_telemetry(lambda: 42)
            assert (result, tel) == (42, {})
        with devices.telemetry(["0"]) as t:
            pass
        assert t == {}
        assert devices.describe_devices(["1"]) == {"gpu_ids": ["1"]}
    assert not caplog.records  # no warning spam


class _FakeNvml(types.ModuleType):
    """Two GPUs; GPU 1's memory climbs while sampled."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.used = [1_000, 5_000]

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if i not in (0, 1):
            raise self.NVMLError("Invalid Argument")
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return f"Fake GPU {h}"

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return f"GPU-0000000{h}-aaaa".encode()

    def nvmlDeviceGetMemoryInfo(self, h: int) -> types.SimpleNamespace:
        if h == 1:
            self.used[1] += 1_000
        return types.SimpleNamespace(total=80_000, used=self.used[h])

    def nvmlDeviceGetUtilizationRates(self, h: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=50 if h == 1 else 0)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 200_000 if h == 1 else 60_000  # milliwatts


def test_telemetry_samples_only_the_visible_gpu(fresh_nvml: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-00000001")
    assert [g.uuid for g in devices.list_gpus()] == ["GPU-00000000-aaaa", "GPU-00000001-aaaa"]
    _, tel = devices.sample_telemetry(lambda: time.sleep(0.3), interval_s=0.05)
    assert set(tel) == set(devices.TELEMETRY_METRICS)
    assert tel["gpu_memory_bytes"] >= 5_000 + 3_000  # the peak, sampled more than twice
    assert tel["gpu_util"] == 50.0 and tel["power_w"] == 200.0  # GPU 0 is not visible
    info = devices.describe_devices(["1"])
    assert info["gpu_name"] == "Fake GPU 1" and info["gpu_uuid"] == "GPU-00000001-aaaa"
