"""The `onnxruntime` engine: export, fp32, int8 static QDQ / dynamic, int4 MatMulNBits.

Static int8 quantizes the weight-bearing layers (MatMul/Gemm/Conv with an initializer weight)
and the value-preserving ops between them, never Softmax, normalization, element-wise math or
embedding lookups. Graph optimizations are ONNX Runtime's own (ORT_ENABLE_ALL) at session creation, so node
names survive until quantization and per-layer exclusion can find them.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import EvaluationError, InvalidConfigError

if TYPE_CHECKING:
    import onnx
    import torch

    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

logger = logging.getLogger(__name__)

OPSET = 17
WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
#: Ops that only move, select or clip values: in QDQ form they run on int8 with the scale of
#: their input, exactly, so static int8 may keep them quantized between quantized layers.
LOSSLESS_OPS = (
    "Relu",
    "Clip",
    "MaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
)
INT4_BLOCK_SIZE = 32
MAX_MESSAGE = 600  # characters of each exporter's message kept in the trial's reason


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' and quantizers' warnings and root-logger chatter."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_onnx(module: torch.nn.Module, task: Task) -> bytes:
    """Export with the TorchScript exporter, falling back to the dynamo exporter.

    Raises EvaluationError carrying both exporters' messages when neither succeeds.
    """
    import torch

    from paretotune.evaluators.torch_engine import to_tensors

    args = to_tensors(task.example_inputs, task.input_names)
    errors = []
    for dynamo in (False, True):
        with tempfile.TemporaryDirectory() as tmp, _quiet():
            path = os.path.join(tmp, "model.onnx")
            try:
                kwargs: dict[str, Any] = {"dynamo": dynamo, "external_data": False}
                if not dynamo:
                    kwargs["opset_version"] = OPSET
                torch.onnx.export(
                    module,
                    args,
                    path,
                    input_names=task.input_names,
                    output_names=task.output_names,
                    dynamic_axes=task.dynamic_axes,
                    **kwargs,
                )
                with open(path, "rb") as fh:
                    return fh.read()
            except Exception as exc:  # noqa: BLE001 - exporters raise many types
                name = "dynamo exporter" if dynamo else "TorchScript exporter"
                message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
                errors.append(f"{name}: {type(exc).__name__}: {message[:MAX_MESSAGE]}")
                logger.debug("ONNX export with the %s failed: %s", name, exc)
    raise EvaluationError("ONNX export failed; " + " | ".join(errors))


# -- graph helpers ---------------------------------------------------------------------------


def _module_path(node: onnx.NodeProto) -> str | None:
    """The PyTorch module a node came from, from its name scope or the dynamo metadata."""
    if node.name.startswith("/"):
        parts = node.name.strip("/").split("/")[:-1]
        return ".".join(parts) if parts else None
    for prop in node.metadata_props:
        if prop.key == "namespace":  # ": Root/fc1: Linear/linear: aten.linear.default"
            scopes = [s.split(":")[0].strip() for s in prop.value.split("/")]
            return ".".join(s for s in scopes[1:-1] if s) or None
    return None


def layer_nodes(model: onnx.ModelProto, layers: Sequence[str]) -> dict[str, list[str]]:
    """Map each PyTorch layer name (or ONNX node name) to its MatMul/Gemm/Conv node names."""
    weights = {init.name for init in model.graph.initializer}
    wanted = set(layers)
    found: dict[str, list[str]] = {name: [] for name in layers}
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in weights:
            continue
        candidates = [node.name, _module_path(node), node.input[1].removesuffix(".weight")]
        for candidate in candidates:
            if candidate in wanted:
                found[candidate].append(node.name)
                break
    return found


def weight_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul/Gemm/Conv nodes whose second input is a weight (an initializer)."""
    weights = {init.name for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in weights
    ]


def static_nodes(model: onnx.ModelProto, exclude: Sequence[str]) -> list[str]:
    """The nodes static int8 quantizes: weight-bearing layers and the lossless ops around them.

    ONNX Runtime's static quantizer would otherwise quantize every op it knows, Softmax,
    LayerNormalization, Add (the attention mask's -3.4e38 among them), Gather on embeddings and
    activation-by-activation MatMuls, which costs a transformer most of its fidelity.
    """
    excluded = set(exclude)
    keep = set(weight_nodes(model)) - excluded
    return [
        node.name
        for node in model.graph.node
        if node.name in keep or (node.op_type in LOSSLESS_OPS and node.name not in excluded)
    ]


def keep_fp32_consumers(model: onnx.ModelProto, quantized: Sequence[str]) -> int:
    """Point nodes that are not quantized back at the fp32 tensor a Q/DQ pair was put on.

    The static quantizer hands the dequantized copy of an activation to every consumer (a
    residual Add or a Shape beside the MatMul it quantizes), making them pay the rounding too.
    Returns how many inputs it rewired.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    source: dict[str, str] = {}  # DQ output -> the fp32 tensor its Q read
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producers.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            source[node.output[0]] = q.input[0]
    keep = set(quantized)
    rewired = 0
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.name in keep:
            continue
        for i, name in enumerate(node.input):
            if name in source:
                node.input[i] = source[name]
                rewired += 1
    return rewired


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite plain Gemm (weights as initializers) as MatMul + Add, keeping the node name.

    ONNX Runtime's dynamic and int4 quantizers only handle MatMul.
    """
    import onnx
    from onnx import helper, numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            node.op_type == "Gemm"
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and not attrs.get("transA", 0)
            and len(node.input) >= 2
            and node.input[1] in inits
            and users.get(node.input[1]) == 1
        )
        if not plain:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            inits[node.input[1]].CopyFrom(
                numpy_helper.from_array(np.ascontiguousarray(weight.T), node.input[1])
            )
        has_bias = len(node.input) > 2 and node.input[2] != ""
        matmul_out = node.output[0] + "_matmul" if has_bias else node.output[0]
        nodes.append(
            helper.make_node("MatMul", [node.input[0], node.input[1]], [matmul_out], name=node.name)
        )
        if has_bias:
            nodes.append(
                helper.make_node(
                    "Add", [matmul_out, node.input[2]], [node.output[0]], name=node.name + "_bias"
                )
            )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over the task's calibration batches."""

    def __init__(self, batches: Sequence[Mapping[str, np.ndarray]], names: set[str]):
        self._iter = iter([{k: v for k, v in b.items() if k in names} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:  # pragma: no cover - only used by some calibrators
        pass


def build_onnxruntime(
    fp32: bytes, spec: BuildSpec, task: Task, layers: Sequence[str]
) -> tuple[bytes, dict[str, Any]]:
    """Quantize an fp32 ONNX model as `spec` asks; returns the model bytes and build details."""
    import onnx

    if spec.bit_width == 32:
        return fp32, {}
    model = onnx.load_from_string(fp32)
    if spec.bit_width == 4 or spec.quant_mode == "dynamic":
        model = gemm_to_matmul(model)
    mapping = layer_nodes(model, layers)
    exclude = sorted(n for layer in spec.excluded_layers for n in mapping.get(layer, []))
    unmapped = [layer for layer in spec.excluded_layers if not mapping.get(layer)]
    details: dict[str, Any] = {"excluded_nodes": exclude}
    if unmapped:
        details["unmapped_excluded_layers"] = unmapped
        logger.warning("layers %s have no MatMul/Gemm/Conv node in the ONNX graph", unmapped)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        try:
            if spec.bit_width == 4:
                out = _int4(model, exclude)
                return out.SerializeToString(), details
            from onnxruntime.quantization import (
                QuantFormat,
                QuantType,
                quantize_dynamic,
                quantize_static,
            )
            from onnxruntime.quantization.shape_inference import quant_pre_process

            onnx.save(model, src)
            _pre_process(quant_pre_process, src)
            extra: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
            # TensorRT takes explicit int8 only as signed, symmetric Q/DQ (zero point 0)
            for_tensorrt = spec.engine in ("tensorrt", "onnxruntime_tensorrt")
            if for_tensorrt:
                extra.update(ActivationSymmetric=True, WeightSymmetric=True)
            if spec.quant_mode == "static":
                nodes = static_nodes(model, exclude)
                details["quantized_nodes"] = len(nodes)
                quantize_static(
                    src,
                    dst,
                    _Calibration(task.calibration, {i.name for i in model.graph.input}),
                    quant_format=QuantFormat.QDQ,
                    per_channel=spec.per_channel,
                    activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_quantize=nodes,
                    nodes_to_exclude=exclude,
                    # MatMul/Gemm outputs stay fp32 (MatMulIntegerToFloat): re-quantizing them
                    # to uint8 cost MiniLM 0.05 of fidelity; Conv keeps its int8 output so
                    # conv -> relu -> pool -> conv chains stay in int8.
                    extra_options={
                        **extra,
                        "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
                    },
                )
            else:
                quantize_dynamic(
                    src,
                    dst,
                    op_types_to_quantize=["MatMul"],
                    per_channel=spec.per_channel,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=exclude,
                    extra_options=extra,
                )
            if spec.quant_mode == "static":
                out = onnx.load(dst)
                details["fp32_consumers_rewired"] = keep_fp32_consumers(out, nodes)
                return out.SerializeToString(), details
            with open(dst, "rb") as fh:
                return fh.read(), details
        except InvalidConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - quantizers raise many types
            raise EvaluationError(
                f"onnxruntime quantization (bit_width={spec.bit_width}, quant_mode={spec.quant_mode!r}) failed: {exc}"
            ) from exc


def _pre_process(quant_pre_process: Callable[..., None], path: str) -> None:
    """ONNX shape inference before quantizing.

    ONNX Runtime's symbolic shape inference is skipped on purpose: when it cannot complete it
    dumps `sym_shape_infer_temp.onnx` and its external data into the current directory.
    """
    try:
        quant_pre_process(path, path, skip_optimization=True, skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - inference failing only costs shape info
        logger.debug("quantization pre-processing failed: %s", exc)


def _int4(model: onnx.ModelProto, exclude: Sequence[str]) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=INT4_BLOCK_SIZE,
        is_symmetric=True,
        accuracy_level=4,
        nodes_to_exclude=list(exclude),
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    return quantizer.model.model


class OrtRunner:
    """An ONNX Runtime CPU session with a fixed intra-op thread count."""

    engine = "onnxruntime"

    def __init__(self, model: bytes, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EvaluationError(
                f"the ONNX model needs inputs {missing}; the task gives {list(inputs)}"
            )
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in self.input_names}
        session = self.session

        def run() -> Any:
            return session.run(None, feeds)

        return run

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.prepare(inputs)()[0], dtype=np.float32)


def onnx_summary(model: bytes) -> dict[str, int]:
    """Op-type counts of a model, for details and tests."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load_from_string(model).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


# -- GPU execution providers (onnxruntime-gpu) -----------------------------------------------


def provider_options(
    spec: BuildSpec, engine_cache_dir: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The providers (with options) of engine 'onnxruntime_cuda' or 'onnxruntime_tensorrt':
    CUDA graphs, cuDNN's conv algorithm search, TensorRT's fp16/int8 and workspace, with the
    CUDA provider behind TensorRT and the CPU provider last for what neither runs."""
    cuda: dict[str, Any] = {
        "device_id": 0,
        "cudnn_conv_algo_search": spec.option("cudnn_conv_algo_search"),
    }
    graphs = bool(spec.option("cuda_graphs"))
    if spec.engine == "onnxruntime_cuda":
        cuda["enable_cuda_graph"] = graphs
        return [("CUDAExecutionProvider", cuda), ("CPUExecutionProvider", {})]
    if spec.engine != "onnxruntime_tensorrt":
        raise InvalidConfigError(
            f"engine={spec.engine!r} has no GPU providers; allowed: 'onnxruntime_cuda', "
            "'onnxruntime_tensorrt'"
        )
    trt: dict[str, Any] = {
        "device_id": 0,
        "trt_fp16_enable": spec.bit_width == 16,
        # int8 here is the static Q/DQ model: TensorRT takes its scales, no calibration table
        "trt_int8_enable": spec.bit_width == 8,
        "trt_cuda_graph_enable": graphs,
    }
    if spec.option("workspace_mb"):
        trt["trt_max_workspace_size"] = int(spec.option("workspace_mb")) * 1024**2
    if engine_cache_dir is not None:
        trt["trt_engine_cache_enable"] = True
        trt["trt_engine_cache_path"] = engine_cache_dir
    return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", cuda),
            ("CPUExecutionProvider", {})]


#: ONNX Runtime's message when a CUDA-graph session cannot be built (a node on the CPU, a
#: Memcpy between CPU and GPU, control flow, or TensorRT not taking the whole graph)
GRAPH_CAPTURE_REFUSED = re.compile(
    r"cannot use the (CUDA Graph|graph capture) feature[^\n]*", re.IGNORECASE
)


def preload_tensorrt() -> str:
    """Import tensorrt so its libnvinfer is loaded before ONNX Runtime's TensorRT provider
    looks for it: a pip-installed TensorRT is on no library path, and without it the provider
    fails to load and the session silently runs on CUDA. Returns tensorrt's version."""
    try:
        import tensorrt
    except ImportError as exc:
        raise InvalidConfigError(
            "engine='onnxruntime_tensorrt' needs the tensorrt package (its libnvinfer) "
            f"importable: {exc}"
        ) from exc
    return str(getattr(tensorrt, "__version__", "?"))


class OrtGpuRunner:
    """An ONNX Runtime session on CUDA or TensorRT with I/O binding.

    Timed batches keep their inputs and outputs in device buffers at fixed addresses (what CUDA
    graphs need): a batch copies its inputs in (`update_inplace`), runs, and copies its output
    out. ONNX Runtime exposes no CUDA events, so the host clock is read after its run returns
    (it synchronizes the stream): end to end with the copies, and the run alone as compute.

    With CUDA graphs (`enable_cuda_graph`, `trt_cuda_graph_enable`) a session serves one input
    shape, so each timed shape gets its own session. ONNX Runtime captures the graph inside a
    session's first run and replays it over the buffers bound then, so a graph session is only
    ever run through `run_with_iobinding` on the bound device buffers (a plain `run` would
    capture over ONNX Runtime's private copies of the feeds, and later inputs would be
    ignored). Output shapes come from the plain session, which also runs the accuracy pass. A
    graph session that ONNX Runtime refuses to build (a node left on the CPU, which needs a
    Memcpy) makes the config invalid, with ONNX Runtime's reason.
    """

    def __init__(self, model: bytes, spec: BuildSpec, engine_cache_dir: str | None = None):
        import onnxruntime as ort

        self._ort = ort
        self.engine = spec.engine
        self._model = model
        self._providers = provider_options(spec, engine_cache_dir)
        self._graphs = bool(spec.option("cuda_graphs"))
        wanted = self._providers[0][0]
        if wanted == "TensorrtExecutionProvider":
            logger.debug("preloaded tensorrt %s for ONNX Runtime's TensorRT provider",
                         preload_tensorrt())
        available = ort.get_available_providers()
        if wanted not in available:
            raise InvalidConfigError(
                f"engine={spec.engine!r} needs ONNX Runtime's {wanted}; this onnxruntime has "
                f"{available} (install paretotune[gpu]: onnxruntime-gpu instead of onnxruntime)"
            )
        self._plain = self._session(graphs=False)
        self.input_names = [i.name for i in self._plain.get_inputs()]
        self.output_names = [o.name for o in self._plain.get_outputs()]
        self._timed: dict[tuple[Any, ...], Any] = {}
        # one graph session now: a refusal is known at build time, before anything is cached
        self._spare = self._session(graphs=True) if self._graphs else None

    def _session(self, graphs: bool) -> Any:
        ort = self._ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        providers = []
        for name, opts in self._providers:
            opts = dict(opts)
            for key in ("enable_cuda_graph", "trt_cuda_graph_enable"):
                if key in opts:
                    opts[key] = graphs
            providers.append((name, opts))
        try:
            session = ort.InferenceSession(self._model, options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/RuntimeException types
            refused = GRAPH_CAPTURE_REFUSED.search(str(exc))
            if graphs and refused:
                raise InvalidConfigError(
                    f"cuda_graphs=True is not buildable on engine={self.engine!r} for this "
                    f"model: ONNX Runtime says it {refused.group(0).strip()}; allowed here: "
                    "cuda_graphs=False"
                ) from exc
            raise
        if session.get_providers()[0] != providers[0][0]:
            raise EvaluationError(
                f"ONNX Runtime did not start {providers[0][0]} (it runs on "
                f"{session.get_providers()}); see its log for the reason"
            )
        return session

    def _bound(self, inputs: Mapping[str, np.ndarray]) -> tuple[Any, dict[str, Any], Any]:
        """(session, device inputs, io binding) for this input shape, outputs on the device."""
        ort = self._ort
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in self.input_names}
        key = tuple((n, a.shape, a.dtype.str) for n, a in feeds.items())
        if key in self._timed:
            return self._timed[key]
        session = self._plain
        if self._graphs:
            session, self._spare = self._spare or self._session(graphs=True), None
        # output shapes from the plain session: a graph session's first run is its capture
        first = self._plain.run(self.output_names, feeds)
        device = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for n, a in feeds.items()}
        binding = session.io_binding()
        for name, value in device.items():
            binding.bind_ortvalue_input(name, value)
        for name, value in zip(self.output_names, first, strict=True):
            out = ort.OrtValue.ortvalue_from_shape_and_type(value.shape, value.dtype, "cuda", 0)
            binding.bind_ortvalue_output(name, out)
        session.run_with_iobinding(binding)  # warm-up; on a graph session, the capture
        self._timed = {key: (session, device, binding)}  # one shape at a time
        return self._timed[key]

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        session, device, binding = self._bound(inputs)
        host = {n: np.ascontiguousarray(inputs[n]) for n in self.input_names}

        def run() -> Any:
            for name, value in device.items():
                value.update_inplace(host[name])
            session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]

        return run

    def prepare_timed(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], tuple[float, float]]:
        import time

        session, device, binding = self._bound(inputs)
        host = {n: np.ascontiguousarray(inputs[n]) for n in self.input_names}

        def sample() -> tuple[float, float]:
            t0 = time.perf_counter_ns()
            for name, value in device.items():
                value.update_inplace(host[name])
            t1 = time.perf_counter_ns()
            session.run_with_iobinding(binding)
            t2 = time.perf_counter_ns()
            binding.copy_outputs_to_cpu()
            t3 = time.perf_counter_ns()
            return (t3 - t0) / 1e6, (t2 - t1) / 1e6

        return sample

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in self.input_names}
        return np.asarray(self._plain.run(self.output_names[:1], feeds)[0], dtype=np.float32)
