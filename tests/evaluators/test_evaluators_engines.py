"""Building and measuring: quantized graphs hold the right ops, caches skip builds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from paretotune.errors import ConfigError, EvaluationError
from paretotune.evaluators import METRIC_NAMES, Task, TaskEvaluator
from paretotune.evaluators.onnxruntime_engine import LOSSLESS_OPS, WEIGHT_OPS

from _evmodels import FAST, images, unexportable

ORT = {"engine": "onnxruntime"}


def _graph(evaluator: TaskEvaluator, config: dict) -> onnx.ModelProto:
    evaluator(config)
    built = next(reversed(evaluator._built.values()))
    return onnx.load_from_string(built.artifact)


def _ops(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in model.graph.node}


def _is_fp32_layer(model: onnx.ModelProto, name: str) -> bool:
    """Whether node `name` is a plain MatMul/Gemm/Conv reading an fp32 weight initializer."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.name == name]
    if len(nodes) != 1 or nodes[0].op_type not in ("MatMul", "Gemm", "Conv"):
        return False
    weight = inits.get(nodes[0].input[1])
    return weight is not None and numpy_helper.to_array(weight).dtype.name == "float32"


def test_measurement_has_the_vocabulary_and_honest_details(tiny_evaluator: TaskEvaluator) -> None:
    m = tiny_evaluator({"engine": "onnxruntime", "batch_size": 4})
    assert set(m.metrics) <= set(METRIC_NAMES)
    assert {
        "latency_p50_ms",
        "latency_p90_ms",
        "throughput",
        "accuracy",
        "model_bytes",
        "peak_memory_bytes",
        "build_s",
        "baseline_latency_p50_ms",
    } <= set(m.metrics)
    assert ("latency_p99_ms" in m.metrics) == (m.details["n_samples"] >= 100)
    assert m.metrics["latency_p50_ms"] <= m.metrics["latency_p90_ms"]
    for key in (
        "stable",
        "spread",
        "n_samples",
        "windows",
        "extended",
        "gave_up",
        "cache_hit",
        "phases_s",
    ):
        assert key in m.details
    hardware = m.details["hardware"]
    assert (
        hardware["threads"] == 1
        and "avx512_vnni" in hardware["isa"]
        and hardware["versions"]["onnxruntime"]
    )
    assert m.metrics["accuracy"] == pytest.approx(1.0, abs=1e-6)  # fp32 ORT agrees with torch


def dequantized_consumers(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> op type of every node reading a DequantizeLinear output."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: n.op_type for n in model.graph.node if dq & set(n.input)}


def test_static_int8_has_qdq_nodes(tiny_evaluator: TaskEvaluator) -> None:
    model = _graph(tiny_evaluator, {**ORT, "bit_width": 8, "quant_mode": "static"})
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(model)
    consumers = dequantized_consumers(model)
    for layer in ("/conv1/Conv", "/conv2/Conv", "/fc1/Gemm", "/fc2/Gemm"):
        assert consumers.get(layer) in ("Conv", "Gemm"), layer
    assert set(consumers.values()) <= set(WEIGHT_OPS + LOSSLESS_OPS)


def test_dynamic_int8_has_integer_matmuls(tiny_evaluator: TaskEvaluator) -> None:
    model = _graph(
        tiny_evaluator, {**ORT, "bit_width": 8, "quant_mode": "dynamic", "per_channel": True}
    )
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= _ops(model)


def test_int4_has_matmulnbits(tiny_evaluator: TaskEvaluator) -> None:
    assert "MatMulNBits" in _ops(_graph(tiny_evaluator, {**ORT, "bit_width": 4}))


@pytest.mark.parametrize(
    "config",
    [
        {**ORT, "bit_width": 8, "quant_mode": "dynamic"},
        {**ORT, "bit_width": 8, "quant_mode": "static"},
        {**ORT, "bit_width": 4},
    ],
    ids=["dynamic", "static", "int4"],
)
def test_excluded_layers_stay_fp32(tiny_evaluator: TaskEvaluator, config: dict) -> None:
    model = _graph(tiny_evaluator, {**config, "precision": {"fc1": "fp32", "fc2": "int8"}})
    assert _is_fp32_layer(model, "/fc1/Gemm")
    assert not _is_fp32_layer(model, "/fc2/Gemm")  # the layer not excluded is quantized


def test_torch_int8_keeps_excluded_linears_float(tiny_evaluator: TaskEvaluator) -> None:
    tiny_evaluator({"bit_width": 8, "precision": {"fc1": "fp32"}})
    built = next(reversed(tiny_evaluator._built.values()))
    module = built.runners[1].module
    assert type(module.fc1) is torch.nn.Linear
    assert "quantized" in type(module.fc2).__module__


def test_unmodified_accuracy_equals_the_reference(digits_task: Task, tmp_path) -> None:
    evaluator = TaskEvaluator(digits_task, cache_dir=tmp_path, timing=FAST)
    model = digits_task.fresh_module()
    with torch.inference_mode():
        correct = total = 0
        for inputs, targets in digits_task.validation:
            predicted = model(torch.from_numpy(inputs["image"])).argmax(1).numpy()
            correct += int((predicted == targets).sum())
            total += len(targets)
    m = evaluator({})
    assert m.metrics["accuracy"] == evaluator.reference_accuracy() == correct / total
    assert m.metrics["accuracy"] > 0.9


def test_cache_skips_a_second_build(tiny_task: Task, tmp_path) -> None:
    config = {**ORT, "bit_width": 8, "quant_mode": "static"}
    first = TaskEvaluator(tiny_task, cache_dir=tmp_path, timing=FAST)
    a = first(config)
    assert first.builds == 1 and a.details["cache_hit"] is False and a.details["artifact_source"] == "built"
    b = first({**config, "batch_size": 8, "threads": 2})  # batch size and threads only: same engine
    assert first.builds == 1 and b.details["cache_hit"] is True and b.details["artifact_source"] == "memory"
    assert b.metrics["accuracy"] == a.metrics["accuracy"] and b.details["threads"] == 2
    second = TaskEvaluator(tiny_task, cache_dir=tmp_path, timing=FAST)  # another worker process
    c = second(config)
    assert second.builds == 0 and c.details["cache_hit"] is True and c.details["artifact_source"] == "disk"
    assert c.metrics["accuracy"] == a.metrics["accuracy"]
    assert c.metrics["model_bytes"] == a.metrics["model_bytes"]


def test_baseline_is_torch_fp32_at_the_same_batch_and_threads_timed_beside_each_trial(
    tiny_evaluator: TaskEvaluator,
) -> None:
    m = tiny_evaluator({**ORT, "batch_size": 4, "threads": 2})
    base = m.details["baseline"]
    assert base["engine"] == "torch" and base["bit_width"] == 32 and base["timing"].startswith("paired")
    assert len(base["window_ratios"]) == len(m.details["window_p50_ms"]) == 3
    assert len(base["block_ratios"]) >= 3  # the sides alternate in blocks inside each window
    assert m.metrics["speedup"] == pytest.approx(float(np.median(base["block_ratios"])), rel=1e-3)
    assert m.metrics["baseline_latency_p50_ms"] == base["p50_ms"]
    again = tiny_evaluator({**ORT, "bit_width": 8, "batch_size": 4, "threads": 2})
    # timed again beside this trial: its own samples, not the first trial's number
    assert again.details["baseline"]["window_p50_ms"] != base["window_p50_ms"]


def test_reference_none_times_only_the_trial(tiny_task, tmp_path) -> None:
    evaluator = TaskEvaluator(tiny_task, cache_dir=tmp_path, timing=FAST, reference="none")
    m = evaluator(ORT)
    assert "speedup" not in m.metrics and "baseline_latency_p50_ms" not in m.metrics
    assert m.details["baseline"]["timing"].startswith("none")
    with pytest.raises(ConfigError, match=r"reference must be one of \['paired', 'none'\], got 'cached'"):
        TaskEvaluator(tiny_task, cache_dir=tmp_path, reference="cached")


def test_a_model_that_fails_to_export_carries_the_exporters_message(tmp_path) -> None:
    task = Task(unexportable, {"x": images(4)}, validation=[({"x": images(4)}, None)])
    evaluator = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    assert evaluator({}).metrics["accuracy"] == 1.0  # it runs on torch eager
    with pytest.raises(EvaluationError, match="bessel_j0"):
        evaluator(ORT)


def test_sparsity_is_credited_for_size_only(tiny_evaluator: TaskEvaluator) -> None:
    dense = tiny_evaluator({})
    sparse = tiny_evaluator({"sparsity": 0.5})
    details = next(reversed(tiny_evaluator._built.values())).details
    assert details["zeroed_weights"] >= 0.5 * details["sparse_weights"] - 10
    assert sparse.metrics["model_bytes"] < dense.metrics["model_bytes"]
    assert details["dense_model_bytes"] == dense.metrics["model_bytes"]
