"""Pruning: structured pruning physically shrinks tensors and the model still runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretotune.evaluators import Task, TaskEvaluator
from paretotune.evaluators.pruning import apply_sparsity, count_parameters, prune_structured

from _evmodels import FAST, images, tiny_net


def test_structured_pruning_shrinks_tensors_and_keeps_the_output_shape() -> None:
    model = tiny_net()
    x = torch.from_numpy(images(4))
    before, out_before = count_parameters(model), model(x).shape
    prune_structured(model, (x,), 0.5)
    assert count_parameters(model) < 0.5 * before
    assert model.conv1.out_channels == 8 and model.conv2.in_channels == 8
    assert model.fc1.out_features == 32 and model.fc2.in_features == 32
    assert model.fc2.out_features == 10  # the output layer is kept whole
    with torch.no_grad():
        assert model(x).shape == out_before


def test_pruning_keeps_the_highest_l1_channels() -> None:
    model = tiny_net()
    with torch.no_grad():
        model.fc1.weight[:32] *= 100  # make the first 32 neurons the strongest
    kept = model.fc1.bias[:32].detach().clone()  # biases: one per neuron, inputs aside
    prune_structured(model, (torch.from_numpy(images(2)),), 0.5)
    assert torch.equal(model.fc1.bias, kept)


def test_sparsity_zeroes_the_smallest_weights_without_changing_shapes() -> None:
    model = tiny_net()
    shapes = [p.shape for p in model.parameters()]
    zeros, total = apply_sparsity(model, 0.3)
    assert zeros / total == pytest.approx(0.3, abs=0.01)
    assert [p.shape for p in model.parameters()] == shapes


def test_pruned_configs_build_on_both_engines(tiny_task: Task, tmp_path) -> None:
    evaluator = TaskEvaluator(tiny_task, cache_dir=tmp_path, timing=FAST)
    dense = evaluator({"engine": "onnxruntime"})
    pruned = evaluator({"engine": "onnxruntime", "prune_ratio": 0.5})
    details = pruned.details["build_details"]
    assert details["parameters"] < details["parameters_before"]
    assert pruned.metrics["model_bytes"] < 0.6 * dense.metrics["model_bytes"]
    torch_pruned = evaluator({"prune_ratio": 0.5, "bit_width": 8})
    assert torch_pruned.metrics["model_bytes"] < dense.metrics["model_bytes"]
    assert 0.0 <= pruned.metrics["accuracy"] <= 1.0


def test_pruning_an_onnx_task_is_invalid(tiny_task: Task, tmp_path) -> None:
    from paretotune.errors import InvalidConfigError
    from paretotune.evaluators.onnxruntime_engine import export_onnx

    path = tmp_path / "tiny.onnx"
    path.write_bytes(export_onnx(tiny_task.fresh_module(), tiny_task))
    task = Task(path, {"x": images(4)}, validation=[({"x": images(4)}, None)])
    evaluator = TaskEvaluator(task, cache_dir=tmp_path / "c", timing=FAST)
    with pytest.raises(InvalidConfigError, match="prune_ratio"):
        evaluator({"engine": "onnxruntime", "prune_ratio": 0.2})
    m = evaluator({"engine": "onnxruntime", "bit_width": 8, "precision": {"/fc1/Gemm": "fp32"}})
    assert m.metrics["accuracy"] > 0.5 and np.isfinite(m.metrics["latency_p50_ms"])
    assert m.details["build_details"]["excluded_nodes"] == ["/fc1/Gemm"]
