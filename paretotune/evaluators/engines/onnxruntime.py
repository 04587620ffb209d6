"""Engine `onnxruntime`: ONNX Runtime's CPU provider on the fp32 ONNX export, fp32, int8
(dynamic or static QDQ) or int4 weight-only (`onnxruntime_engine`).

Runtime options (session options: graph optimization level, executor, inter-op threads) stay
out of the artifact; `transformer_fusion` runs ONNX Runtime's transformer optimizer on the
export before quantization, for tasks with attention layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import InvalidConfigError
from paretotune.evaluators.engines import base

if TYPE_CHECKING:
    import torch

    from paretotune.evaluators.cache import ArtifactCache
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

INT8_LAYERS = ("int8", "fp32")
RUNTIME_OPTIONS = (
    base.Option("graph_optimization_level", "enable_all",
           ("disable_all", "enable_basic", "enable_extended", "enable_all"), stage="runtime",
           doc="SessionOptions.graph_optimization_level"),
    base.Option("execution_mode", "sequential", ("sequential", "parallel"), stage="runtime",
           doc="SessionOptions.execution_mode"),
    base.Option("inter_op_threads", 1, (1, 2), stage="runtime", when={"execution_mode": ("parallel",)},
           doc="SessionOptions.inter_op_num_threads (parallel mode only)"),
)
TRANSFORMER_FUSION = base.Option(
    "transformer_fusion", False, (False, True), transformer=True,
    doc="onnxruntime.transformers optimizer (model_type bert) before quantization",
)


class OnnxRuntimeEngine(base.Engine):
    name = "onnxruntime"
    capabilities = base.Capabilities(
        bit_widths=(32, 8, 4),
        int8_modes=("dynamic", "static"),
        per_channel=True,
        layer_precisions={8: INT8_LAYERS, 4: INT8_LAYERS},
        options=(*RUNTIME_OPTIONS, TRANSFORMER_FUSION),
        min_fidelity={32: 0.9999, 8: 0.95, 4: 0.90},
    )
    packages: tuple[str, ...] = ("onnxruntime", "onnx")

    def problem(self, *, has_module: bool, is_onnx: bool) -> str | None:
        return self.missing_package({"onnxruntime": "install paretotune[cpu]"}, is_onnx=is_onnx)

    def check(
        self, spec: BuildSpec, config: Mapping[str, Any], layers: Mapping[str, str], ignored: list[str]
    ) -> BuildSpec:
        if spec.option("transformer_fusion") and not base.looks_like_transformer(layers):
            raise InvalidConfigError(
                f"transformer_fusion=True on engine={self.name!r} needs a model with attention "
                "layers; this task's layers have none"
            )
        return spec

    def build(self, source: base.BuildSource, spec: BuildSpec) -> base.Built:
        from paretotune.evaluators import onnxruntime_engine as ort_engine

        task = source.task
        fp32 = source.onnx()
        fused = bool(spec.option("transformer_fusion"))
        if fused:
            heads, hidden = attention_shape(source.module(), task)
            fp32, stats = ort_engine.fuse_transformer(fp32, heads, hidden)
            source.details["fusion"] = stats
        artifact, info = ort_engine.build_onnxruntime(
            fp32, self.quantize_spec(spec), task, list(task.layers), fused=fused
        )
        source.details.update(info)
        source.details["op_counts"] = ort_engine.onnx_summary(artifact)
        return base.Built(artifact, len(artifact))

    def quantize_spec(self, spec: BuildSpec) -> BuildSpec:
        """The spec `build_onnxruntime` quantizes for (the TensorRT provider's fp16 is a flag)."""
        return spec

    def runner(
        self, artifact: bytes, spec: BuildSpec, task: Task, threads: int, *,
        cache: ArtifactCache | None = None, sibling: Any = None,
    ) -> base.Runner:
        from paretotune.evaluators.onnxruntime_engine import OrtRunner

        return OrtRunner(artifact, threads, dict(spec.runtime_options))

    def full_precision_layers(
        self, artifact: bytes, spec: BuildSpec, task: Task, layers: Sequence[str]
    ) -> list[str]:
        """Layers whose MatMul/Gemm/Conv still takes an fp32 initializer as its weight (a
        quantized one reads it from a DequantizeLinear, or became MatMulInteger/MatMulNBits)."""
        import onnx

        from paretotune.evaluators.onnx_graph import layer_nodes

        model = onnx.load_from_string(artifact)
        floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
        weights = {n.name: n.input[1] for n in model.graph.node if len(n.input) > 1}
        found = layer_nodes(model, list(layers))
        return [n for n in layers if any(weights.get(node) in floats for node in found[n])]

    # -- export ----------------------------------------------------------------------------------

    def export(self, artifact: bytes, spec: BuildSpec, task: Task) -> base.ExportedArtifact:
        return base.ExportedArtifact({"model.onnx": artifact}, "model.onnx", onnx_io(artifact, task))

    def triton_layout(self, threads: int, spec: BuildSpec | None = None) -> base.TritonLayout:
        parameters = {"intra_op_thread_count": str(int(threads))}
        options = dict(spec.runtime_options) if spec is not None else {}
        if options.get("execution_mode") == "parallel":  # Triton's onnxruntime backend names
            parameters["execution_mode"] = "1"
            parameters["inter_op_thread_count"] = str(int(options.get("inter_op_threads", 1)))
        return base.TritonLayout("onnxruntime", "onnxruntime_onnx", parameters=parameters)

    def load_exported(self, directory: Path, config: Mapping[str, Any]) -> base.Predictor:
        import onnxruntime as ort

        from paretotune.evaluators.onnxruntime_engine import session_options

        resolved = config.get("resolved") or {}
        options = {o.name: resolved[o.name] for o in RUNTIME_OPTIONS if o.name in resolved}
        session = ort.InferenceSession(
            (directory / config["artifact"]).read_bytes(),
            session_options(int(resolved.get("threads") or 1), options),
            providers=["CPUExecutionProvider"],
        )
        names = [s["name"] for s in config["io"]["outputs"]]

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [np.asarray(v) for v in session.run(names, feeds)]

        return run


def attention_shape(module: torch.nn.Module | None, task: Task) -> tuple[int, int]:
    """(heads, hidden size) of the model's self-attention, from its first module that has
    `num_attention_heads` and `all_head_size` (Hugging Face BERT-style; after head pruning)."""
    for sub in [] if module is None else module.modules():
        heads, size = getattr(sub, "num_attention_heads", None), getattr(sub, "all_head_size", None)
        if isinstance(heads, int) and isinstance(size, int) and heads > 0:
            return heads, size
    raise InvalidConfigError(
        f"transformer_fusion=True needs the attention's head count, and task {task.name!r} has "
        "no module with num_attention_heads and all_head_size (a BERT-like PyTorch model)"
    )


def onnx_io(data: bytes, task: Task) -> dict[str, Any]:
    """Inputs, outputs (name, dtype, shape; -1 for a dynamic dim) and batching of an ONNX model."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(data)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    shapes = _runtime_shapes(data, task)

    def describe(value: Any, observed: tuple[int, ...] | None) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        dims: list[int] = []
        for i, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(-1)
            else:  # unknown: take what the model produced on the example batch
                dims.append(observed[i] if observed is not None and i < len(observed) else -1)
        if not tensor.HasField("shape") and observed is not None:
            dims = list(observed)
        return {"name": value.name, "dtype": dtype, "shape": dims}

    examples = task.example_inputs
    described_in = [describe(v, tuple(examples[v.name].shape) if v.name in examples else None) for v in inputs]
    described_out = [describe(v, shapes.get(v.name)) for v in model.graph.output]
    batching = all(d["shape"] and d["shape"][0] == -1 for d in described_in)
    return {"inputs": described_in, "outputs": described_out, "batching": batching}


def _runtime_shapes(data: bytes, task: Task) -> dict[str, tuple[int, ...]]:
    """Output shapes on the example batch, for dims the graph leaves unknown."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feeds = {i.name: task.example_inputs[i.name] for i in session.get_inputs() if i.name in task.example_inputs}
    outputs = session.run(None, feeds)
    return {o.name: tuple(np.asarray(v).shape) for o, v in zip(session.get_outputs(), outputs, strict=True)}
