"""Telemetry's device ids (PCI order for local workers, UUID prefixes, MIG ids, device 0 when
nothing is set), native bf16 only, and benchmarks/gpu_torch.py without an fp32 reference."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from paretotune.errors import InvalidConfigError
from paretotune.evaluators import availability, devices, torch_cuda_engine

from _gpumodels import small_task

ROOT = Path(__file__).resolve().parents[2]
UUIDS = ["GPU-1111aaaa-0000", "GPU-2222bbbb-0000"]
MIG = "MIG-3333cccc-0000"


class FakeNvml(types.ModuleType):
    """Two GPUs in PCI order; GPU 1 is split into one MIG device (instance 1/0)."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("pynvml")

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:
        if i not in (0, 1):
            raise self.NVMLError("Invalid Argument")
        return f"gpu{i}"

    def nvmlDeviceGetUUID(self, h: str) -> bytes:
        return (MIG if h == "mig" else UUIDS[int(h[-1])]).encode()

    def nvmlDeviceGetName(self, h: str) -> str:
        return {"gpu0": "NVIDIA H200", "gpu1": "NVIDIA A100", "mig": "NVIDIA A100 MIG 1g.10gb"}[h]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: str) -> int:
        return 2 if h == "gpu1" else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: str, i: int) -> str:
        if i != 0:
            raise self.NVMLError("Not Found")
        return "mig"

    def nvmlDeviceGetGpuInstanceId(self, h: str) -> int:
        return 1

    def nvmlDeviceGetComputeInstanceId(self, h: str) -> int:
        return 0

    def nvmlDeviceGetMemoryInfo(self, h: str) -> Any:
        return types.SimpleNamespace(total=1000, used={"gpu0": 100, "gpu1": 200, "mig": 30}[h])

    def nvmlDeviceGetUtilizationRates(self, h: str) -> Any:
        return types.SimpleNamespace(gpu=10)

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:
        return 100_000


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    devices._reset_for_tests()
    yield fake
    devices._reset_for_tests()


@pytest.mark.parametrize(
    ("entry", "name"),
    [
        ("0", "NVIDIA H200"),
        ("1", "NVIDIA A100"),
        ("GPU-2222", "NVIDIA A100"),  # a unique UUID prefix
        ("gpu-1111AAAA", "NVIDIA H200"),  # case does not matter
        ("2222bbbb", "NVIDIA A100"),  # without the GPU- prefix
        (MIG, "NVIDIA A100 MIG 1g.10gb"),  # a MIG device's UUID
        (f"MIG-{UUIDS[1]}/1/0", "NVIDIA A100 MIG 1g.10gb"),  # the older MIG-GPU-<uuid>/gi/ci
        ("GPU-", None),  # ambiguous: CUDA refuses it too
        (f"MIG-{UUIDS[1]}/2/0", None),
        ("7", None),
    ],
)
def test_each_kind_of_visible_device_id_resolves(nvml: FakeNvml, entry: str, name: str | None) -> None:
    assert devices.device_name(entry) == name


def test_telemetry_samples_device_0_when_nothing_is_visible_and_the_mig_device_when_asked(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _, tel = devices.sample_telemetry(lambda: None, interval_s=0.01)
    assert tel["gpu_memory_bytes"] == 100.0  # GPU 0 only, not 100 + 200
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG)
    _, tel = devices.sample_telemetry(lambda: None, interval_s=0.01)
    assert tel["gpu_memory_bytes"] == 30.0


def test_local_workers_get_pci_device_order(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "unset by the test")  # restored afterwards
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    with devices.telemetry():  # what the worker loop wraps each trial in
        pass
    import os

    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # inherited by the trial process
    env = {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}
    assert devices.use_pci_device_order(env) is False and env["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
    env = {}
    assert devices.use_pci_device_order(env) is True and env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_the_build_identity_names_a_mig_device(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{MIG},0")
    assert availability.gpu_build_identity()["gpu_name"] == "NVIDIA A100 MIG 1g.10gb"


def test_bf16_needs_native_support_not_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, Any]] = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append({"including_emulation": including_emulation})
        return including_emulation  # a T4: bf16 only through emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    with pytest.raises(InvalidConfigError, match=r"half='bf16' is not buildable on Tesla T4 "
                       r"\(no native bf16.*allowed there: half='fp16'"):
        torch_cuda_engine.check_device(torch.bfloat16)
    assert asked == [{"including_emulation": False}]
    torch_cuda_engine.check_device(torch.float16)  # fp16 is fine there


def _load_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_torch_bench", ROOT / "benchmarks" / "gpu_torch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_torch_benchmark_survives_a_failed_fp32_reference(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load_benchmark()

    class Evaluator:
        def __init__(self, task: Any, **kwargs: Any) -> None:
            pass

        def __call__(self, config: dict[str, Any]) -> Any:
            if not config.get("cuda_graphs") and config.get("bit_width", 32) == 32:
                raise RuntimeError("CUDA error: out of memory")  # the fp32 eager reference
            return types.SimpleNamespace(
                metrics={"latency_p50_ms": 1.0, "throughput": 100.0, "accuracy": 0.9},
                details={"compute_latency_p50_ms": 0.5, "stable": True, "spread": 0.01},
            )

    import paretotune.evaluators as evaluators

    monkeypatch.setattr(bench, "_require_cuda", lambda: "Fake GPU")
    monkeypatch.setattr(bench, "_task", lambda name: small_task())
    monkeypatch.setattr(evaluators, "TaskEvaluator", Evaluator)
    monkeypatch.setattr(torch_cuda_engine, "bf16_native", lambda: True)
    out = tmp_path / "rows.json"
    code = bench.main(["--tasks", "digits", "--batches", "1", "--json", str(out), "--fail-on-error"])
    printed = capsys.readouterr().out
    assert code == 1  # a failed variant fails the run under --fail-on-error
    assert "| fp32 eager | 1 | failed: CUDA error: out of memory |" in printed
    assert "| fp16 | 1 | 1.000 | 0.500 | - | 100 | 0.9000 | - | True (0.01) |" in printed
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == 5 and saved["failures"][0]["variant"] == "fp32 eager"
    assert bench.main(["--tasks", "digits", "--batches", "1"]) == 0  # without the flag
