"""The `openvino` engine on the digits CNN and on MiniLM: fidelity per precision, options,
per-layer fp32, the artifact format, and the Triton layout."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from paretotune.errors import ConfigError, EvaluationError, InvalidConfigError
from paretotune.evaluators import Task
from paretotune.evaluators.onnxruntime_engine import export_onnx
from paretotune.evaluators.task import mean_cosine, top1_agreement
from paretotune.evaluators.torch_engine import to_tensors

pytest.importorskip("openvino", reason="openvino not importable (install paretotune[cpu])")

from paretotune.evaluators import openvino_engine as ove  # noqa: E402
from paretotune.evaluators import openvino_ir as ovir  # noqa: E402

pytestmark = pytest.mark.slow

TOLERANCE = ove.CAPABILITIES.min_fidelity
#: fp32 through OpenVINO against the torch module: rounding of a different kernel order only
FP32_ATOL = 1e-4
QUERY = "bert.encoder.layer.0.attention.self.query"
KEY = "bert.encoder.layer.0.attention.self.key"


def _needs_nncf() -> None:
    pytest.importorskip("nncf", reason="nncf not importable (install paretotune[cpu])")


def _reference(task: Task, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        out = task.reference_module()(*to_tensors(inputs, task.input_names))
    return out.numpy()


def _fidelity(task: Task, runner: ove.OpenVINORunner, refs: list[np.ndarray]) -> float:
    outs = np.concatenate([runner.run(inputs) for inputs, _ in task.validation])
    ref = np.concatenate(refs)
    return mean_cosine(outs, ref) if task.fidelity == "cosine" else top1_agreement(outs, ref)


class Model:
    """A task with its fp32 ONNX export and torch reference outputs, built once per module."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.onnx = export_onnx(task.fresh_module(), task)
        self.layers = list(task.layers)
        self.refs = [_reference(task, inputs) for inputs, _ in task.validation]
        self._built: dict[tuple[Any, ...], bytes] = {}

    def build(self, bit_width: int, excluded: tuple[str, ...] = (), **options: Any) -> bytes:
        key = (bit_width, excluded, tuple(sorted(options.items())))
        if key not in self._built:
            self._built[key] = ove.build_openvino(
                self.onnx, bit_width, options, self.task, self.layers, excluded
            )
        return self._built[key]

    def fidelity(self, artifact: bytes, bit_width: int, threads: int = 1, **options: Any) -> float:
        return _fidelity(self.task, ove.OpenVINORunner(artifact, threads, bit_width, options), self.refs)


@pytest.fixture(scope="module")
def digits(digits_task: Task) -> Model:
    return Model(digits_task)


@pytest.fixture(scope="module")
def minilm() -> Model:
    from examples.minilm import task

    return Model(task)


# -- fp32 -----------------------------------------------------------------------------------


def test_fp32_matches_torch_on_the_digits_cnn(digits: Model) -> None:
    runner = ove.OpenVINORunner(digits.build(32), 1, 32, {})
    for (inputs, _), ref in zip(digits.task.validation, digits.refs, strict=True):
        np.testing.assert_allclose(runner.run(inputs), ref, atol=FP32_ATOL, rtol=0)
    assert runner.properties["INFERENCE_PRECISION_HINT"] == "f32"
    assert runner.properties["INFERENCE_NUM_THREADS"] == "1"


def test_fp32_matches_torch_on_minilm_at_every_sequence_length(minilm: Model) -> None:
    runner = ove.OpenVINORunner(minilm.build(32), 1, 32, {})
    assert minilm.fidelity(minilm.build(32), 32) >= TOLERANCE[32]
    # batches cut to their longest real row: one compiled model serves every length
    lengths = set()
    for batch_size in (1, 3, 16):
        inputs = minilm.task.timing_batch(batch_size)
        lengths.add(inputs["input_ids"].shape[1])
        np.testing.assert_allclose(
            runner.run(inputs), _reference(minilm.task, inputs), atol=FP32_ATOL, rtol=0
        )
    assert len(lengths) > 1


def test_prepare_sets_inputs_once_and_the_timed_call_repeats(minilm: Model) -> None:
    runner = ove.OpenVINORunner(minilm.build(32), 1, 32, {})
    inputs = minilm.task.timing_batch(4)
    call = runner.prepare(inputs)
    first = np.array(call()[0])
    inputs["input_ids"][:] = 0  # the request holds its own copy of the inputs
    np.testing.assert_array_equal(np.array(call()[0]), first)
    with pytest.raises(EvaluationError, match="needs inputs \\['attention_mask'\\]"):
        runner.prepare({"input_ids": inputs["input_ids"]})


# -- quantized ------------------------------------------------------------------------------


def test_int8_nncf_keeps_the_declared_fidelity_on_the_digits_cnn(digits: Model) -> None:
    _needs_nncf()
    artifact = digits.build(8)
    assert ovir.quantized_weight_ops(artifact)  # it is quantized at all
    assert digits.fidelity(artifact, 8) >= TOLERANCE[8]


def test_int8_nncf_on_minilm_keeps_fidelity_and_leaves_fp32_layers_unquantized(
    minilm: Model,
) -> None:
    _needs_nncf()
    artifact = minilm.build(8, (QUERY,))
    quantized = ovir.quantized_weight_ops(artifact)
    ops = ovir.map_excluded_layers(
        minilm.onnx, ovir.load_model(artifact), minilm.layers, [QUERY, KEY]
    )
    assert ops[QUERY] and ops[KEY]
    assert not set(ops[QUERY]) & set(quantized)  # no FakeQuantize, no int8 weights
    assert set(ops[KEY]) <= set(quantized)  # its neighbour is int8
    assert len(quantized) == len(ovir.weight_ops(ovir.load_model(artifact))) - 1
    assert minilm.fidelity(artifact, 8) >= TOLERANCE[8]


def test_per_layer_fp32_on_the_cnn_by_module_and_by_onnx_node_name(digits: Model) -> None:
    _needs_nncf()
    everything = ovir.quantized_weight_ops(digits.build(8))
    artifact = digits.build(8, ("fc1", "/conv2/Conv"))
    quantized = ovir.quantized_weight_ops(artifact)
    assert set(everything) - set(quantized) == {
        "/fc1/Gemm/WithoutBiases",
        "/conv2/Conv/WithoutBiases",
    }
    int4 = ovir.quantized_weight_ops(digits.build(4, ("fc2",)))
    assert "/fc2/Gemm/WithoutBiases" not in int4 and "/fc1/Gemm/WithoutBiases" in int4


def test_a_layer_without_weight_ops_is_refused_not_dropped(digits: Model) -> None:
    _needs_nncf()
    with pytest.raises(InvalidConfigError, match="'nope'"):
        digits.build(8, ("nope",))
    with pytest.raises(InvalidConfigError, match="applies at bit widths \\[4, 8\\]"):
        digits.build(32, ("fc1",))


def test_int4_weight_only(digits: Model, minilm: Model) -> None:
    """int4 targets Linear/MatMul: in the CNN only fc1 gets int4, NNCF keeps convolutions and
    the last layer at int8; in MiniLM every encoder MatMul is int4."""
    _needs_nncf()
    cnn = ovir.quantized_weight_ops(digits.build(4))
    assert [op for op, how in cnn.items() if "i4" in how] == ["/fc1/Gemm/WithoutBiases"]
    assert all("u8" in cnn[op] for op in cnn if "Conv" in op)
    assert digits.fidelity(digits.build(4), 4) >= TOLERANCE[4]
    transformer = ovir.quantized_weight_ops(minilm.build(4))
    assert sum("i4" in how for how in transformer.values()) >= 30
    assert minilm.fidelity(minilm.build(4), 4) >= TOLERANCE[4]


def test_transformer_detection(digits: Model, minilm: Model) -> None:
    assert ovir.is_transformer(ovir.load_model(minilm.build(32)))
    assert not ovir.is_transformer(ovir.load_model(digits.build(32)))


# -- bf16 -----------------------------------------------------------------------------------


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}


def test_bf16_builds_where_the_cpu_has_it_and_says_why_not_elsewhere(minilm: Model) -> None:
    reason = ove.availability(16)
    native = "BF16" in ove.cpu_capabilities()
    if _cpu_flags():  # OpenVINO's view agrees with the kernel's
        assert native == bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if native:
        assert reason is None
        runner = ove.OpenVINORunner(minilm.build(16), 1, 16, {})
        assert runner.properties["INFERENCE_PRECISION_HINT"] == "bf16"
        assert _fidelity(minilm.task, runner, minilm.refs) >= TOLERANCE[16]
        return
    assert reason is not None and "OPTIMIZATION_CAPABILITIES" in reason and "'BF16'" in reason
    with pytest.raises(InvalidConfigError) as built:
        minilm.build(16)
    assert str(built.value) == reason
    with pytest.raises(InvalidConfigError):
        ove.OpenVINORunner(minilm.build(32), 1, 16, {})


def test_availability_names_a_missing_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    from paretotune.evaluators import availability

    assert ove.availability() is None
    monkeypatch.setattr(availability, "importable", lambda name: name != "openvino")
    assert ove.availability(32) == "openvino not importable (install paretotune[cpu])"
    monkeypatch.setattr(availability, "importable", lambda name: name != "nncf")
    assert ove.availability(32) is None
    assert "nncf not importable" in (ove.availability(8) or "")


# -- options --------------------------------------------------------------------------------


def test_every_declared_option_value_builds_and_runs(digits: Model) -> None:
    _needs_nncf()
    inputs = digits.task.validation[0][0]
    expected = digits.refs[0]
    fp32 = digits.build(32)
    seen = 0
    for option in ove.CAPABILITIES.options:
        for value in option.allowed:
            bit_width = 32 if 32 in option.bit_widths else option.bit_widths[0]
            artifact = digits.build(bit_width, **{option.name: value})
            if option.stage == "compile":
                assert artifact == fp32  # compile options leave the IR alone
            runner = ove.OpenVINORunner(artifact, 2, bit_width, {option.name: value})
            out = runner.run(inputs)
            if bit_width == 32:
                np.testing.assert_allclose(out, expected, atol=FP32_ATOL, rtol=0)
            else:
                assert top1_agreement(out, expected) >= TOLERANCE[4]
            seen += 1
    assert seen == sum(len(o.allowed) for o in ove.CAPABILITIES.options) == 7
    asym, sym = digits.build(4, weight_mode="int4_asym"), digits.build(4, weight_mode="int4_sym")
    assert asym != sym


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"num_streams": 3}, ["'num_streams'", "3", "[1, 2, 'AUTO']"]),
        ({"num_streams": True}, ["'num_streams'", "True", "[1, 2, 'AUTO']"]),
        ({"performance_hint": "latency"}, ["'performance_hint'", "'latency'", "['LATENCY', 'THROUGHPUT']"]),
        ({"weight_mode": "nf4"}, ["'weight_mode'", "'nf4'", "['int4_sym', 'int4_asym']"]),
        ({"streams": 1}, ["'streams'", "['performance_hint', 'num_streams', 'weight_mode']"]),
    ],
)
def test_an_undeclared_option_is_refused_naming_it(
    digits: Model, options: dict[str, Any], words: list[str]
) -> None:
    for attempt in (
        lambda: ove.OpenVINORunner(digits.build(32), 1, 32, options),
        lambda: ove.build_openvino(digits.onnx, 32, options, digits.task, digits.layers),
    ):
        with pytest.raises(ConfigError) as refused:
            attempt()
        for word in words:
            assert word in str(refused.value)


def test_more_streams_than_threads_is_invalid_not_silently_fewer(digits: Model) -> None:
    with pytest.raises(InvalidConfigError, match="threads=1 .*allowed at threads=1: \\[1, 'AUTO'\\]"):
        ove.OpenVINORunner(digits.build(32), 1, 32, {"num_streams": 2})
    assert ove.build_options({"num_streams": 2, "weight_mode": "int4_asym"}, 4) == {
        "weight_mode": "int4_asym"
    }
    assert ove.build_options({"weight_mode": "int4_asym"}, 8) == {}
    with pytest.raises(InvalidConfigError, match="bit_width=2 .*\\[4, 8, 16, 32\\]"):
        ove.OpenVINORunner(digits.build(32), 1, 2, {})


# -- the artifact ---------------------------------------------------------------------------


def test_the_artifact_round_trips_through_bytes_and_a_directory(
    digits: Model, tmp_path: Path
) -> None:
    bit_width = 8 if ove.availability(8) is None else 32
    artifact = digits.build(bit_width)
    xml, weights = ovir.unpack_ir(artifact)
    assert xml.lstrip().startswith(b"<?xml") and ovir.pack_ir(xml, weights) == artifact
    paths = ove.write_ir(artifact, tmp_path / "1")
    assert [p.name for p in paths] == ["model.xml", "model.bin"]
    again = ove.read_ir(tmp_path / "1")
    assert again == artifact
    inputs = digits.task.validation[0][0]
    np.testing.assert_array_equal(
        ove.OpenVINORunner(again, 1, bit_width, {}).run(inputs),
        ove.OpenVINORunner(artifact, 1, bit_width, {}).run(inputs),
    )
    with pytest.raises(EvaluationError, match="header announces"):
        ovir.unpack_ir(artifact[:-1])
    # the same build gives the same bytes (no counter-made op names): a stable cache entry
    assert ove.build_openvino(digits.onnx, bit_width, {}, digits.task, digits.layers) == artifact


class _Plant:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_planted_artifact_runs_no_code(digits: Model, tmp_path: Path) -> None:
    marker = tmp_path / "planted"
    planted = pickle.dumps(_Plant(marker))
    with pytest.raises(EvaluationError, match="must start with b'PTOVIR01'"):
        ove.OpenVINORunner(planted, 1, 32, {})
    # the right header around a pickle: OpenVINO's XML parser refuses it
    with pytest.raises(EvaluationError, match="not a readable IR"):
        ove.OpenVINORunner(ovir.pack_ir(planted, b""), 1, 32, {})
    assert not marker.exists()
    pickle.loads(planted)  # the plant is live: it would have left the marker
    assert marker.exists()


# -- Triton ---------------------------------------------------------------------------------


def test_triton_layout_mirrors_the_compile_properties() -> None:
    layout = ove.triton_layout(2, 32, {"num_streams": "AUTO", "performance_hint": "THROUGHPUT"})
    assert layout.backend == "openvino" and layout.platform is None
    assert layout.files == ("model.xml", "model.bin") and layout.kind == "KIND_CPU"
    assert layout.parameters == {
        "INFERENCE_NUM_THREADS": "2",
        "NUM_STREAMS": "AUTO",
        "PERFORMANCE_HINT": "THROUGHPUT",
    }
    assert not layout.precision_pinned  # Triton's backend has no f32 parameter
    bf16 = ove.triton_layout(1, 16, {})
    assert bf16.parameters["HINT_BF16"] == "YES" and bf16.precision_pinned
    text = ove.triton_parameters_text(layout.parameters)
    assert text.count("parameters {") == 3
    assert 'key: "NUM_STREAMS"\n  value: { string_value: "AUTO" }' in text


def test_a_fresh_build_makes_its_runner_at_the_trials_threads(tiny_evaluator: Any) -> None:
    # the build's first runner is made at the trial's threads, as for an artifact loaded from
    # the cache: two streams at two threads build from an empty cache (they failed at 1 thread)
    config = {"engine": "openvino", "num_streams": 2, "threads": 2}
    m = tiny_evaluator(config)
    assert m.metrics["latency_p50_ms"] > 0
    again = tiny_evaluator(config)  # from memory now; the same runner serves it
    assert again.metrics["latency_p50_ms"] > 0
