"""The GPU engines for real. Each test skips with the missing piece named; on a machine with
CUDA (and TensorRT / onnxruntime-gpu where named) they build, run and time real engines."""

from __future__ import annotations

import pytest

from paretotune.evaluators import Task, TaskEvaluator
from paretotune.evaluators.availability import importable

from _gpumodels import FAST, task_fixture  # noqa: F401 - the `task` fixture


def _cuda_reason() -> str | None:
    if not importable("torch"):
        return "needs torch: not importable"
    import torch

    if not torch.cuda.is_available():
        return "needs CUDA: torch.cuda.is_available() is False"
    return None


def _tensorrt_reason() -> str | None:
    for package in ("tensorrt", "pycuda"):
        if not importable(package):
            return f"needs {package}: not importable"
    return _cuda_reason()


def _provider_reason(provider: str) -> str | None:
    if not importable("onnxruntime"):
        return "needs onnxruntime-gpu: onnxruntime not importable"
    import onnxruntime

    if provider not in onnxruntime.get_available_providers():
        return f"needs onnxruntime-gpu: onnxruntime has no {provider}"
    if provider == "TensorrtExecutionProvider" and not importable("tensorrt"):
        return "needs tensorrt: not importable"
    return _cuda_reason()


CUDA = pytest.mark.skipif(_cuda_reason() is not None, reason=_cuda_reason() or "")
TENSORRT = pytest.mark.skipif(_tensorrt_reason() is not None, reason=_tensorrt_reason() or "")
ORT_CUDA = pytest.mark.skipif(
    _provider_reason("CUDAExecutionProvider") is not None,
    reason=_provider_reason("CUDAExecutionProvider") or "",
)
ORT_TRT = pytest.mark.skipif(
    _provider_reason("TensorrtExecutionProvider") is not None,
    reason=_provider_reason("TensorrtExecutionProvider") or "",
)


def _check(measurement, min_fidelity: float) -> None:
    metrics, details = measurement.metrics, measurement.details
    assert metrics["accuracy"] >= min_fidelity
    assert details["compute_latency_p50_ms"] <= metrics["latency_p50_ms"]
    assert metrics["throughput"] > 0


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize(
    ("config", "fidelity"),
    [
        ({}, 0.99),
        ({"bit_width": 16, "half": "fp16"}, 0.9),
        ({"bit_width": 16, "half": "bf16"}, 0.9),
        ({"cuda_graphs": True}, 0.99),
        ({"bit_width": 16, "cuda_graphs": True}, 0.9),
    ],
)
def test_torch_cuda(task: Task, tmp_path, config: dict, fidelity: float) -> None:
    import torch

    from paretotune.evaluators.torch_cuda_engine import bf16_native

    if config.get("half") == "bf16" and not bf16_native():
        pytest.skip(f"needs native bf16: {torch.cuda.get_device_name()} has none")
    evaluator = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    measurement = evaluator({"engine": "torch_cuda", "batch_size": 8, **config})
    _check(measurement, fidelity)
    assert measurement.details["timing_clock"] == "CUDA events"


@pytest.mark.gpu
@pytest.mark.slow
@CUDA
def test_torch_cuda_compiled(task: Task, tmp_path) -> None:
    evaluator = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    _check(evaluator({"engine": "torch_cuda", "torch_compile": True, "batch_size": 8}), 0.99)


@pytest.mark.gpu
@TENSORRT
@pytest.mark.parametrize(
    ("config", "fidelity"),
    [
        ({}, 0.99),
        ({"bit_width": 16}, 0.9),
        ({"bit_width": 8}, 0.8),
        ({"bit_width": 8, "int8_source": "qdq"}, 0.8),
        ({"bit_width": 8, "precision": {"fc2": "fp32"}}, 0.8),
        ({"precision": {"fc1": "fp16"}, "workspace_mb": 256}, 0.9),
    ],
)
def test_tensorrt(task: Task, tmp_path, config: dict, fidelity: float) -> None:
    import tensorrt

    from paretotune.errors import InvalidConfigError
    from paretotune.evaluators.tensorrt_engine import strongly_typed

    evaluator = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    strong = strongly_typed(tensorrt)
    if strong and config.get("bit_width") == 8 and config.get("int8_source") != "qdq":
        with pytest.raises(InvalidConfigError, match="removed the int8 calibrators"):
            evaluator({"engine": "tensorrt", "batch_size": 8, **config})
        return
    measurement = evaluator({"engine": "tensorrt", "batch_size": 8, **config})
    _check(measurement, fidelity)
    build = measurement.details["build_details"]
    assert build["engine_cache_key"]
    if "precision" in config and strong:
        assert build["graph_casts"]["half_nodes"]  # fc1 computes in fp16 through its casts
    elif "precision" in config:
        assert "OBEY_PRECISION_CONSTRAINTS" in build["layer_precision"]["flags"]


@pytest.mark.gpu
@TENSORRT
def test_tensorrt_engines_come_back_from_the_cache(task: Task, tmp_path) -> None:
    config = {"engine": "tensorrt", "bit_width": 16, "batch_size": 4}
    first = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    first(config)
    second = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    assert second.build_artifact(config).source == "disk"
    assert second.builds == 0


@pytest.mark.gpu
@TENSORRT
def test_tensorrt_plan_io_and_triton_config(task: Task, tmp_path) -> None:
    from paretotune.evaluators.tensorrt_engine import plan_io
    from paretotune.export import triton_config

    built = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST).build_artifact(
        {"engine": "tensorrt", "batch_size": 8}
    )
    io_spec = plan_io(built.data)
    assert [s["name"] for s in io_spec["inputs"]] == ["x"]
    assert io_spec["inputs"][0]["shape"][0] == -1
    text = triton_config("small", "tensorrt", "model.plan", io_spec, 8, 1)
    assert 'platform: "tensorrt_plan"' in text and "KIND_GPU" in text


@pytest.mark.gpu
@ORT_CUDA
@pytest.mark.parametrize("config", [{}, {"cuda_graphs": True}, {"bit_width": 8, "quant_mode": "static"}])
def test_onnxruntime_cuda(task: Task, tmp_path, config: dict) -> None:
    evaluator = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    _check(evaluator({"engine": "onnxruntime_cuda", "batch_size": 8, **config}), 0.8)


@pytest.mark.gpu
@ORT_TRT
@pytest.mark.parametrize("config", [{}, {"bit_width": 16}, {"bit_width": 8}])
def test_onnxruntime_tensorrt(task: Task, tmp_path, config: dict) -> None:
    evaluator = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    _check(evaluator({"engine": "onnxruntime_tensorrt", "batch_size": 8, **config}), 0.8)
