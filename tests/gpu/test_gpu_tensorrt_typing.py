"""TensorRT 10 (weak typing) and 11 (strong typing) builds against recording fakes of both
APIs: the version check, the per-layer pins, and fp16/bf16 from Casts in the ONNX graph."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import onnx
import pytest
from _fake_trt import fake_tensorrt
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from paretotune.errors import EvaluationError, InvalidConfigError
from paretotune.evaluators import Task
from paretotune.evaluators import tensorrt_casts as tc
from paretotune.evaluators import tensorrt_engine as te
from paretotune.evaluators.config import resolve_config
from paretotune.evaluators.onnxruntime_engine import export_onnx

from _gpumodels import LAYERS, task_fixture  # noqa: F401 - the `task` fixture

TRT10, TRT11 = "10.16.1.11", "11.4.0.106"


@pytest.fixture(scope="module")
def small_onnx(task: Task) -> bytes:
    return export_onnx(task.reference_module(), task)


def _build(monkeypatch: pytest.MonkeyPatch, task: Task, onnx_bytes: bytes, version: str,
           config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    trt = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(te, "gpu_identity", lambda: {"name": "NVIDIA H200", "capability": (9, 0)})
    spec = resolve_config({"engine": "tensorrt", "batch_size": 8, **config}, LAYERS)
    plan, details = te.build_tensorrt(onnx_bytes, spec, task, list(LAYERS))
    assert plan == b"plan:" + version.encode()
    (builder,) = trt.builders
    return details, builder


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    found = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    found.update({i.name: i.data_type for i in inferred.graph.initializer})
    return found


def _node_input_types(model: onnx.ModelProto) -> dict[str, set[int]]:
    types = _types(model)
    return {n.name: {types[i] for i in n.input if i} for n in model.graph.node
            if n.op_type != "Cast"}


# -- the version check --------------------------------------------------------------------------


def test_the_major_version_decides_the_typing() -> None:
    assert not te.strongly_typed(fake_tensorrt(TRT10))
    assert te.strongly_typed(fake_tensorrt(TRT11))
    with pytest.raises(EvaluationError, match=r"tensorrt.__version__ is 'dev'"):
        te.trt_major(types.SimpleNamespace(__version__="dev"))
    assert te.network_flags(fake_tensorrt(TRT10)) == 0
    assert te.network_flags(fake_tensorrt(TRT11)) == 1 << 1  # STRONGLY_TYPED


def test_tensorrt_11_support_is_checked_by_data_type_not_by_flag() -> None:
    trt = fake_tensorrt(TRT11)
    assert not hasattr(trt.BuilderFlag, "FP16")  # the fake follows TensorRT 11
    te.check_gpu_supports(["fp16", "bf16", "int8", "fp8"], (9, 0), "H200", trt)
    with pytest.raises(InvalidConfigError, match=r"bf16 is not buildable on T4"):
        te.check_gpu_supports(["bf16"], (7, 5), "T4", trt)
    del trt.DataType.FP8
    with pytest.raises(InvalidConfigError, match=r"TensorRT 11.4.0.106: it has no DataType.FP8"):
        te.check_gpu_supports(["fp8"], (9, 0), "H200", trt)


# -- TensorRT 10: weak typing -------------------------------------------------------------------


def test_trt10_per_layer_fp16_at_fp32_pins_every_other_layer_to_float(
    monkeypatch: pytest.MonkeyPatch, task: Task, small_onnx: bytes
) -> None:
    details, builder = _build(monkeypatch, task, small_onnx, TRT10, {"precision": {"fc1": "fp16"}})
    (network,), (config,) = builder.networks, builder.configs
    layers = {layer.name: layer for layer in network.layers}
    assert layers["/fc1/Gemm"].precision == "HALF"
    for name in ("/conv1/Conv", "/Relu", "/MaxPool", "/Flatten", "/Relu_1", "/fc2/Gemm"):
        assert layers[name].precision == "FLOAT", name  # not free to drop to fp16
    assert layers["/fc2/Gemm"].output_types == {}  # the engine output keeps its type
    assert set(config.flags) == {"FP16", "OBEY_PRECISION_CONSTRAINTS"}
    assert details["typing"].startswith("weak")
    assert details["layer_precision"]["pinned_layers"] == 6
    assert network.parsed is not None and not any(
        n.op_type == "Cast" for n in network.parsed.graph.node
    )  # TensorRT 10 parses the model as it is


def test_trt10_whole_model_fp16_leaves_other_layers_free(
    monkeypatch: pytest.MonkeyPatch, task: Task, small_onnx: bytes
) -> None:
    _, builder = _build(monkeypatch, task, small_onnx, TRT10,
                        {"bit_width": 16, "precision": {"fc2": "fp32"}})
    layers = {layer.name: layer for layer in builder.networks[0].layers}
    assert layers["/fc2/Gemm"].precision == "FLOAT"
    assert layers["/conv1/Conv"].precision is None  # bit_width 16: fp16 where TensorRT likes
    assert "FP16" in builder.configs[0].flags


# -- TensorRT 11: strong typing -----------------------------------------------------------------


def test_trt11_fp16_build_takes_its_precision_from_casts_in_the_graph(
    monkeypatch: pytest.MonkeyPatch, task: Task, small_onnx: bytes
) -> None:
    details, builder = _build(monkeypatch, task, small_onnx, TRT11,
                              {"bit_width": 16, "precision": {"fc2": "fp32"}})
    (network,), (config,) = builder.networks, builder.configs
    assert config.flags == []  # no precision flags exist
    assert network.flags == 1 << 1
    assert details["typing"].startswith("strong")
    parsed = network.parsed
    assert parsed is not None
    onnx.checker.check_model(parsed, full_check=True)
    inputs = _node_input_types(parsed)
    assert inputs["/conv1/Conv"] == {TensorProto.FLOAT16}
    assert inputs["/fc1/Gemm"] == {TensorProto.FLOAT16}
    assert inputs["/fc2/Gemm"] == {TensorProto.FLOAT}  # the per-layer fp32 exception
    types = _types(parsed)
    assert [types[i.name] for i in parsed.graph.input] == [TensorProto.FLOAT]
    assert [types[o.name] for o in parsed.graph.output] == [TensorProto.FLOAT]
    assert details["graph_casts"]["half_nodes"] == {"fp16": 6}


def test_trt11_per_layer_fp16_casts_only_that_layer(
    monkeypatch: pytest.MonkeyPatch, task: Task, small_onnx: bytes
) -> None:
    _, builder = _build(monkeypatch, task, small_onnx, TRT11, {"precision": {"fc1": "fp16"}})
    parsed = builder.networks[0].parsed
    inputs = _node_input_types(parsed)
    assert inputs["/fc1/Gemm"] == {TensorProto.FLOAT16}
    assert all(inputs[n] == {TensorProto.FLOAT} for n in inputs if n != "/fc1/Gemm")
    # and the layers the fake parser made have no precision to set: nothing tried to
    assert not hasattr(builder.networks[0].layers[0], "precision")


def test_trt11_fp32_build_parses_the_model_unchanged(
    monkeypatch: pytest.MonkeyPatch, task: Task, small_onnx: bytes
) -> None:
    details, builder = _build(monkeypatch, task, small_onnx, TRT11, {})
    assert builder.networks[0].parsed.SerializeToString() == small_onnx
    assert "graph_casts" not in details


def test_trt11_int8_needs_qdq_nodes(
    monkeypatch: pytest.MonkeyPatch, task: Task, small_onnx: bytes
) -> None:
    with pytest.raises(InvalidConfigError,
                       match=r"int8_source='calibration' is not buildable with TensorRT 11.*"
                             r"allowed there: int8_source='qdq'"):
        _build(monkeypatch, task, small_onnx, TRT11, {"bit_width": 8})


def test_trt11_per_layer_int8_must_be_fed_by_a_dequantize() -> None:
    spec = resolve_config(
        {"engine": "tensorrt", "bit_width": 8, "int8_source": "qdq"}, LAYERS
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/fc1/MatMul")], "g", [x], [y], [w]
    ))
    te.check_strongly_typed(spec, {"/fc1/MatMul": "fp16"}, model, TRT11)
    with pytest.raises(InvalidConfigError, match=r"'int8' for ONNX nodes \['/fc1/MatMul'\]"):
        te.check_strongly_typed(spec, {"/fc1/MatMul": "int8"}, model, TRT11)


# -- the casts themselves -----------------------------------------------------------------------


def _plan(model: onnx.ModelProto, config: dict[str, Any]) -> dict[str, str]:
    spec = resolve_config({"engine": "tensorrt", **config}, LAYERS)
    assignments, _ = te.node_precisions(spec.layer_precisions, te.layer_node_map(model, LAYERS))
    return tc.half_plan(model, spec, assignments)


def test_fp16_casts_keep_the_outputs_close_to_fp32(task: Task, small_onnx: bytes) -> None:
    model = onnx.load_from_string(small_onnx)
    typed, report = tc.cast_nodes_to_half(model, _plan(model, {"bit_width": 16}))
    x = task.example_inputs["x"]
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = ReferenceEvaluator(typed).run(None, {"x": x})[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-2 * max(1.0, float(np.abs(ref).max()))
    assert report.casts >= 2 and report.constants == 6  # conv, fc1, fc2 weights and biases
    assert not np.array_equal(got, ref)  # it did compute in fp16


def test_bf16_casts_give_bf16_inputs_and_float_outputs(small_onnx: bytes) -> None:
    model = onnx.load_from_string(small_onnx)
    typed, report = tc.cast_nodes_to_half(model, _plan(model, {"precision": {"fc1": "bf16"}}))
    onnx.checker.check_model(typed)
    fc1 = next(n for n in typed.graph.node if n.name == "/fc1/Gemm")
    inits = {i.name: i for i in typed.graph.initializer}
    assert inits[fc1.input[1]].data_type == TensorProto.BFLOAT16
    assert report.half_nodes == {"bf16": 1}
    assert {o.name for o in typed.graph.output} == {o.name for o in model.graph.output}


def test_half_constants_are_clipped_so_a_lowest_float_mask_stays_finite() -> None:
    lowest = np.finfo(np.float32).min
    for precision, elem in (("fp16", TensorProto.FLOAT16), ("bf16", TensorProto.BFLOAT16)):
        tensor = tc._half_initializer("m", np.array([lowest, 1.5, -np.inf], np.float32),
                                      tc.ONNX_HALF_TYPES[precision])
        assert tensor.data_type == elem
        values = numpy_helper.to_array(tensor).astype(np.float32)
        assert np.isfinite(values[0]) and values[0] < -6e4, precision
        assert values[1] == 1.5 and values[2] == -np.inf, precision


def test_ops_that_cannot_run_in_half_stay_float_and_are_reported() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("ConstantOfShape", ["s"], ["ones"], name="ones",
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Add", ["x", "ones"], ["y"], name="add"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    typed, report = tc.cast_nodes_to_half(model, {n.name: "fp16" for n in nodes})
    onnx.checker.check_model(typed, full_check=True)
    assert report.half_nodes == {"fp16": 1}
    assert "ones" in report.left_in_float and "ConstantOfShape" in report.left_in_float["ones"]
    out = ReferenceEvaluator(typed).run(None, {"x": np.ones((2, 3), np.float32)})[0]
    assert out.dtype == np.float32 and np.all(out == 2.0)
