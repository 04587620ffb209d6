"""The TensorRT engine's logic without TensorRT: per-layer precision against a recording fake
of the network and builder config, precision flags, the profile, the engine cache key, and the
Triton config of a tensorrt_plan."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from _fake_trt import FakeLayer10 as FakeLayer
from onnx import TensorProto, helper

from paretotune.errors import EvaluationError, InvalidConfigError
from paretotune.evaluators import Task
from paretotune.evaluators import tensorrt_engine as te
from paretotune.evaluators import tensorrt_precision as tp
from paretotune.evaluators.config import resolve_config
from paretotune.evaluators.onnxruntime_engine import export_onnx
from paretotune.export import triton_config

from _gpumodels import LAYERS, task_fixture  # noqa: F401 - the `task` fixture

# -- a recording fake of tensorrt's network / builder-config interface ---------------------------

FAKE_TRT = SimpleNamespace(
    DataType=SimpleNamespace(**{n: n for n in ("FLOAT", "HALF", "BF16", "INT8", "INT32", "FP8")}),
    BuilderFlag=SimpleNamespace(
        **{n: n for n in ("FP16", "BF16", "INT8", "FP8", "OBEY_PRECISION_CONSTRAINTS")}
    ),
    LayerType=SimpleNamespace(CONSTANT="CONSTANT", SHAPE="SHAPE", CONVOLUTION="CONVOLUTION",
                              MATRIX_MULTIPLY="MATRIX_MULTIPLY", ELEMENTWISE="ELEMENTWISE",
                              ACTIVATION="ACTIVATION"),
    __version__="10.0.0",
)


class FakeTensor:
    def __init__(self, dtype: str = "FLOAT", is_network_output: bool = False) -> None:
        self.dtype = dtype
        self.is_network_output = is_network_output


class FakeNetwork:
    def __init__(self, layers: list[FakeLayer]) -> None:
        self.layers = layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]


class FakeConfig:
    def __init__(self) -> None:
        self.flags: list[str] = []

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)


def _network() -> FakeNetwork:
    """Layers as TensorRT's ONNX parser names them: after the node, extra ones suffixed."""
    return FakeNetwork(
        [
            FakeLayer("conv1.weight", "CONSTANT", [FakeTensor()]),
            FakeLayer("/conv1/Conv", "CONVOLUTION", [FakeTensor()]),
            FakeLayer("/Relu", "ACTIVATION", [FakeTensor()]),
            FakeLayer("/fc1/Gemm", "MATRIX_MULTIPLY", [FakeTensor()]),
            FakeLayer("/fc1/Gemm_1", "ELEMENTWISE", [FakeTensor()]),  # the bias add
            FakeLayer("/fc1/Gemm_shape", "SHAPE", [FakeTensor("INT32")]),
            FakeLayer("/fc2/Gemm", "MATRIX_MULTIPLY", [FakeTensor(is_network_output=True)]),
        ]
    )


def test_layer_precisions_set_precision_output_types_and_flags() -> None:
    network, config = _network(), FakeConfig()
    report = tp.apply_layer_precisions(
        network, config, {"/fc1/Gemm": "fp16", "/conv1/Conv": "int8", "/fc2/Gemm": "fp32"}, FAKE_TRT
    )
    by_name = {layer.name: layer for layer in network.layers}
    assert by_name["/conv1/Conv"].precision == "INT8"
    assert by_name["/conv1/Conv"].output_types == {0: "INT8"}
    assert by_name["/fc1/Gemm"].precision == "HALF" and by_name["/fc1/Gemm_1"].precision == "HALF"
    assert by_name["/fc1/Gemm_1"].output_types == {0: "HALF"}
    # the engine's output keeps the model's type; its layer still computes in fp32
    assert by_name["/fc2/Gemm"].precision == "FLOAT" and by_name["/fc2/Gemm"].output_types == {}
    # weights, shape arithmetic and layers of other nodes are left alone
    for name in ("conv1.weight", "/Relu", "/fc1/Gemm_shape"):
        assert by_name[name].precision is None and by_name[name].output_types == {}
    assert sorted(config.flags) == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
    assert report.layers == {
        "/conv1/Conv": ["/conv1/Conv"],
        "/fc1/Gemm": ["/fc1/Gemm", "/fc1/Gemm_1"],
        "/fc2/Gemm": ["/fc2/Gemm"],
    }
    assert report.unmatched_nodes == []


def test_the_longest_node_name_owns_a_layer() -> None:
    network = FakeNetwork(
        [FakeLayer("/fc/Gemm", "MATRIX_MULTIPLY", [FakeTensor()]),
         FakeLayer("/fc/Gemm_1", "MATRIX_MULTIPLY", [FakeTensor()])]
    )
    tp.apply_layer_precisions(
        network, FakeConfig(), {"/fc/Gemm": "fp16", "/fc/Gemm_1": "bf16"}, FAKE_TRT
    )
    assert [layer.precision for layer in network.layers] == ["HALF", "BF16"]


def test_no_assignments_touch_nothing_and_unmatched_nodes_are_reported() -> None:
    network, config = _network(), FakeConfig()
    assert tp.apply_layer_precisions(network, config, {}, FAKE_TRT).layers == {}
    assert config.flags == [] and all(layer.precision is None for layer in network.layers)
    report = tp.apply_layer_precisions(network, config, {"/nowhere/MatMul": "fp16"}, FAKE_TRT)
    assert report.unmatched_nodes == ["/nowhere/MatMul"] and config.flags == []


def test_pytorch_layers_map_to_their_onnx_nodes(task: Task) -> None:
    model = onnx.load_from_string(export_onnx(task.reference_module(), task))
    mapping = tp.layer_node_map(model, list(LAYERS))
    ops = {n.name: n.op_type for n in model.graph.node}
    for layer, op in (("conv1", "Conv"), ("fc1", "Gemm"), ("fc2", "Gemm")):
        assert any(ops[node] == op for node in mapping[layer]), (layer, mapping[layer])
    assert not set(mapping["fc1"]) & set(mapping["fc2"])
    spec = resolve_config(
        {"engine": "tensorrt", "precision": {"fc1": "fp16", "conv1": "fp32"}}, LAYERS
    )
    nodes, unmapped = tp.node_precisions(spec.layer_precisions, mapping)
    assert unmapped == []
    assert {nodes[n] for n in mapping["fc1"]} == {"fp16"}
    assert {nodes[n] for n in mapping["conv1"]} == {"fp32"}


@pytest.mark.parametrize(
    ("config", "needed"),
    [
        ({}, []),
        ({"bit_width": 16}, ["fp16"]),
        ({"bit_width": 16, "half": "bf16"}, ["bf16"]),
        ({"bit_width": 8}, ["int8"]),
        ({"bit_width": 8, "precision": {"fc1": "fp16"}}, ["fp16", "int8"]),
    ],
)
def test_precision_flags_follow_the_config(config: dict, needed: list[str]) -> None:
    assert tp.precisions_needed(resolve_config({"engine": "tensorrt", **config}, LAYERS)) == needed


def test_the_gpu_must_support_a_precision() -> None:
    tp.check_gpu_supports(["fp16", "int8", "bf16", "fp8"], (9, 0), "H100", FAKE_TRT)
    with pytest.raises(InvalidConfigError, match=r"bf16 is not buildable on T4 .*7.5.*8.0"):
        tp.check_gpu_supports(["bf16"], (7, 5), "T4", FAKE_TRT)
    with pytest.raises(InvalidConfigError, match=r"fp8 is not buildable on A100"):
        tp.check_gpu_supports(["fp8"], (8, 0), "A100", FAKE_TRT)
    old = SimpleNamespace(BuilderFlag=SimpleNamespace(FP16="FP16"), __version__="8.5")
    with pytest.raises(InvalidConfigError, match=r"TensorRT 8.5: it has no BuilderFlag.BF16"):
        tp.check_gpu_supports(["bf16"], (9, 0), "H100", old)


def _qdq_model(zero_point_type: int) -> onnx.ModelProto:
    zp = helper.make_tensor("zp", zero_point_type, [], [0])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
    node = helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["y"], name="q")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", zero_point_type, [1])], initializer=[scale, zp]
    )
    return helper.make_model(graph)


def test_fp8_comes_only_from_fp8_qdq_nodes() -> None:
    assert te.has_fp8_qdq(_qdq_model(TensorProto.FLOAT8E4M3FN))
    assert not te.has_fp8_qdq(_qdq_model(TensorProto.INT8))


def test_profile_covers_every_batch_the_task_feeds() -> None:
    rng = np.random.default_rng(0)

    def batch(rows: int, length: int) -> dict[str, np.ndarray]:
        return {"ids": rng.integers(0, 9, (rows, length)), "mask": np.ones((rows, length))}

    shapes = {"ids": (-1, -1), "mask": (-1, -1), "fixed": (3,)}
    profiles = te.profile_shapes(shapes, [batch(16, 22), batch(8, 14)], batch(4, 9))
    assert profiles["ids"] == ((1, 1), (4, 9), (16, 22))
    assert profiles["mask"] == profiles["ids"]
    assert "fixed" not in profiles  # static inputs need no profile
    with pytest.raises(EvaluationError, match="TensorRT input 'other' has dynamic dims"):
        te.profile_shapes({"other": (-1,)}, [], batch(1, 1))


def test_engine_cache_key_changes_with_each_part() -> None:
    onnx_bytes, build = b"model", {"bit_width": 16, "options": [["half", "fp16"]]}
    gpu = {"name": "NVIDIA H100 80GB HBM3", "capability": (9, 0)}
    key = te.engine_cache_key(onnx_bytes, build, "10.3.0", gpu)
    assert key == te.engine_cache_key(onnx_bytes, dict(build), "10.3.0", dict(gpu))
    variants = [
        te.engine_cache_key(b"model2", build, "10.3.0", gpu),
        te.engine_cache_key(onnx_bytes, {**build, "bit_width": 8}, "10.3.0", gpu),
        te.engine_cache_key(onnx_bytes, build, "10.4.0", gpu),
        te.engine_cache_key(onnx_bytes, build, "10.3.0", {**gpu, "name": "NVIDIA H200"}),
        te.engine_cache_key(onnx_bytes, build, "10.3.0", {**gpu, "capability": (8, 9)}),
    ]
    assert len({key, *variants}) == 6


def test_engine_build_options_hold_the_profile_and_precisions() -> None:
    spec = resolve_config(
        {"engine": "tensorrt", "bit_width": 16, "precision": {"fc1": "fp32"}, "workspace_mb": 64},
        LAYERS,
    )
    options = te.engine_build_options(spec, {"x": ((1, 1), (8, 1), (32, 1))})
    assert options == {
        "bit_width": 16,
        "options": [["half", "fp16"], ["workspace_mb", 64]],
        "layer_precisions": [["fc1", "fp32"]],
        "profile": {"x": [[1, 1], [8, 1], [32, 1]]},
    }


def test_numpy_types_of_engine_io() -> None:
    assert te.numpy_dtype("DataType.HALF") == np.float16
    assert te.numpy_dtype(SimpleNamespace(name="INT64")) == np.int64
    with pytest.raises(EvaluationError, match="type BF16, which numpy cannot hold"):
        te.numpy_dtype("DataType.BF16")


# -- Triton: config.pbtxt for a tensorrt_plan ----------------------------------------------------


def _parse_model_config(text: str) -> Any:
    path = Path(__file__).resolve().parents[1] / "export" / "_triton_schema.py"
    spec = importlib.util.spec_from_file_location("_triton_schema_for_gpu", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_model_config(text)


def test_triton_config_for_a_tensorrt_plan() -> None:
    io_spec = {
        "inputs": [
            {"name": "input_ids", "dtype": "int64", "shape": [-1, -1]},
            {"name": "attention_mask", "dtype": "int64", "shape": [-1, -1]},
        ],
        "outputs": [{"name": "embedding", "dtype": "float32", "shape": [-1, 384]}],
    }
    text = triton_config("minilm_trial3", "tensorrt", "model.plan", io_spec, 16, 4)
    config = _parse_model_config(text)
    assert config.platform == "tensorrt_plan" and config.backend == "tensorrt"
    assert config.default_model_filename == "model.plan"
    assert config.max_batch_size == 16
    assert [i.name for i in config.input] == ["input_ids", "attention_mask"]
    assert [list(i.dims) for i in config.input] == [[-1], [-1]]  # batch dim left out
    assert list(config.output[0].dims) == [384]
    assert config.output[0].data_type == 11  # TYPE_FP32
    assert config.input[0].data_type == 9  # TYPE_INT64
    assert list(config.dynamic_batching.preferred_batch_size) == [16]
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, 1)]  # KIND_GPU
    assert len(config.parameters) == 0  # no CPU thread setting for a GPU plan


def test_exporting_a_tensorrt_trial_without_tensorrt_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from paretotune.evaluators import availability, engines

    monkeypatch.setattr(availability, "importable", lambda name: name != "tensorrt")

    with pytest.raises(EvaluationError, match=r"not available on this machine \(tensorrt not importable \(install paretotune\[gpu\]\)\)"):
        engines.get("tensorrt").require_here()
