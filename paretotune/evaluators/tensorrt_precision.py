"""TensorRT precision: which PyTorch layer becomes which TensorRT layers (through its ONNX
nodes), the per-layer precision constraints of a weakly typed build, the precision flags a
build needs, and what the GPU and the installed TensorRT support. `tensorrt` itself is passed
in by the builder (`tensorrt_engine.py`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paretotune.errors import EvaluationError, InvalidConfigError

if TYPE_CHECKING:
    import onnx

    from paretotune.evaluators.config import BuildSpec

logger = logging.getLogger(__name__)

#: precision name -> the tensorrt.DataType attribute
TRT_DTYPES = {"fp32": "FLOAT", "fp16": "HALF", "bf16": "BF16", "int8": "INT8", "fp8": "FP8"}
#: precision name -> the BuilderFlag that allows it (fp32 needs none)
PRECISION_FLAGS = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8", "fp8": "FP8"}
#: minimum compute capability for each precision's fast kernels
MIN_CAPABILITY = {"fp16": (5, 3), "int8": (6, 1), "bf16": (8, 0), "fp8": (8, 9)}
#: layer types never constrained: weights, casts and shape plumbing keep their own types
SKIPPED_LAYER_TYPES = ("CONSTANT", "SHAPE", "IDENTITY", "CAST", "QUANTIZE", "DEQUANTIZE")
#: the first TensorRT major version without weak typing (precision flags, calibrators)
STRONGLY_TYPED_MAJOR = 11
FLOAT_TENSOR_TYPES = ("FLOAT", "HALF", "BF16")
#: TensorRT I/O type -> numpy dtype name (BF16/FP8 I/O has no numpy type: never used here)


# -- per-layer precision: PyTorch layer -> ONNX nodes -> TensorRT layers ------------------------


def layer_node_map(model: onnx.ModelProto, layers: Sequence[str]) -> dict[str, list[str]]:
    """PyTorch layer name -> the ONNX nodes it became: its MatMul/Gemm/Conv and every other node
    of the same module scope (the bias Add of a MatMul), so the whole layer gets its precision."""
    from paretotune.evaluators.onnx_graph import layer_nodes, module_path

    found = {name: list(nodes) for name, nodes in layer_nodes(model, layers).items()}
    wanted = set(layers)
    for node in model.graph.node:
        scope = module_path(node)
        if scope in wanted and node.name and node.name not in found[scope]:
            found[scope].append(node.name)
    return found


def node_precisions(
    layer_precisions: Sequence[tuple[str, str]], node_map: Mapping[str, Sequence[str]]
) -> tuple[dict[str, str], list[str]]:
    """(ONNX node -> precision, PyTorch layers with no node in the graph)."""
    out: dict[str, str] = {}
    unmapped = []
    for layer, precision in layer_precisions:
        nodes = node_map.get(layer) or []
        if not nodes:
            unmapped.append(layer)
        for node in nodes:
            out[node] = precision
    return out, unmapped


def _owner(layer_name: str, nodes_longest_first: Sequence[str]) -> str | None:
    """The ONNX node a TensorRT layer came from: the parser names a node's layers after the
    node, uniquifying extra layers with a suffix ("/fc1/Gemm", "/fc1/Gemm_1")."""
    for node in nodes_longest_first:
        if layer_name == node or layer_name.startswith(node + "_"):
            return node
    return None


def type_name(value: Any) -> str:
    """'HALF' for trt.DataType.HALF (its str is 'DataType.HALF'), or a fake's plain name."""
    name = getattr(value, "name", None)
    return str(name if isinstance(name, str) else value).rsplit(".", 1)[-1]


@dataclass
class PrecisionReport:
    """What `apply_layer_precisions` set: node -> TensorRT layers constrained, the nodes that
    matched no TensorRT layer, and the other layers pinned to the build's precision."""

    layers: dict[str, list[str]] = field(default_factory=dict)
    unmatched_nodes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    #: other float layers pinned to the build's own precision (fp32 at bit_width 32)
    pinned_layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "constrained_layers": self.layers,
            "unmatched_nodes": self.unmatched_nodes,
            "flags": self.flags,
            "pinned_layers": len(self.pinned_layers),
        }


def apply_layer_precisions(
    network: Any,
    config: Any,
    assignments: Mapping[str, str],
    trt: Any,
    pin_others: str | None = None,
) -> PrecisionReport:
    """Constrain each TensorRT layer made from an ONNX node in `assignments` (node ->
    fp32|fp16|bf16|int8): `layer.precision` and the type of each float output, then set
    OBEY_PRECISION_CONSTRAINTS and the flag each precision needs on `config`.

    `pin_others` (a precision, "fp32" at bit_width 32) constrains every other float layer to
    it: a global FP16 flag set for one fp16 layer would otherwise let TensorRT run every
    unconstrained layer in fp16 too. TensorRT 10 only (weak typing).

    `network` is an INetworkDefinition (num_layers, get_layer), `config` an IBuilderConfig
    (set_flag) and `trt` the tensorrt module (DataType, BuilderFlag, LayerType): parameters, so
    a recording fake stands in for all three. Network outputs keep the model's declared type,
    so the engine's I/O stays what the task feeds and reads (TensorRT converts at the edge).
    """
    report = PrecisionReport()
    if not assignments:
        return report
    nodes = sorted(assignments, key=len, reverse=True)
    skipped = {getattr(trt.LayerType, t) for t in SKIPPED_LAYER_TYPES if hasattr(trt.LayerType, t)}
    pinned: list[str] = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in skipped:
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if any(type_name(t.dtype) not in FLOAT_TENSOR_TYPES for t in outputs):
            continue  # shape/index arithmetic: never forced to a float precision
        node = _owner(layer.name, nodes)
        if node is None and pin_others is None:
            continue
        precision = assignments[node] if node is not None else str(pin_others)
        dtype = getattr(trt.DataType, TRT_DTYPES[precision])
        layer.precision = dtype
        for j, tensor in enumerate(outputs):
            if not tensor.is_network_output:
                layer.set_output_type(j, dtype)
        if node is None:
            pinned.append(layer.name)
        else:
            report.layers.setdefault(node, []).append(layer.name)
    report.unmatched_nodes = [n for n in sorted(assignments) if n not in report.layers]
    report.pinned_layers = pinned
    if report.layers:
        flags = {"OBEY_PRECISION_CONSTRAINTS"}
        flags |= {
            PRECISION_FLAGS[assignments[n]] for n in report.layers if assignments[n] != "fp32"
        }
        for flag in sorted(flags):
            config.set_flag(getattr(trt.BuilderFlag, flag))
        report.flags = sorted(flags)
    return report


# -- precision flags and what the GPU supports ---------------------------------------------------


def precisions_needed(spec: BuildSpec, has_fp8_qdq: bool = False) -> list[str]:
    """The reduced precisions a build enables, from bit_width, `half`, per-layer precision and
    the model's FP8 Q/DQ nodes (TensorRT takes FP8 from explicit quantization only)."""
    needed: set[str] = set()
    if spec.bit_width == 16:
        needed.add(spec.option("half"))
    if spec.bit_width == 8:
        needed.add("int8")
    needed |= {p for _, p in spec.layer_precisions if p != "fp32"}
    if has_fp8_qdq:
        needed.add("fp8")
    return sorted(needed)


def trt_major(trt: Any) -> int:
    """The major version of the tensorrt module (`__version__` "11.4.0.106" -> 11)."""
    version = str(getattr(trt, "__version__", ""))
    head = version.split(".", 1)[0]
    if not head.isdigit():
        raise EvaluationError(
            f"tensorrt.__version__ is {version!r}; expected a version such as '10.16.1.11'"
        )
    return int(head)


def strongly_typed(trt: Any) -> bool:
    """True for TensorRT 11 and later: every network is strongly typed, precision comes from the
    graph's types, and there are no precision builder flags or int8 calibrators."""
    return trt_major(trt) >= STRONGLY_TYPED_MAJOR


def check_gpu_supports(
    precisions: Sequence[str], capability: tuple[int, int], gpu_name: str, trt: Any
) -> None:
    """InvalidConfigError naming the precision when this GPU or TensorRT build lacks it: the
    builder flag under weak typing (TensorRT 10), the data type under strong typing (11)."""
    strong = strongly_typed(trt)
    for precision in precisions:
        if strong:
            dtype = TRT_DTYPES[precision]
            if not hasattr(trt.DataType, dtype):
                raise InvalidConfigError(
                    f"{precision} is not buildable with TensorRT {trt.__version__}: it has no "
                    f"DataType.{dtype}"
                )
        else:
            flag = PRECISION_FLAGS[precision]
            if not hasattr(trt.BuilderFlag, flag):
                raise InvalidConfigError(
                    f"{precision} is not buildable with TensorRT "
                    f"{getattr(trt, '__version__', '?')}: it has no BuilderFlag.{flag}"
                )
        need = MIN_CAPABILITY[precision]
        if tuple(capability) < need:
            raise InvalidConfigError(
                f"{precision} is not buildable on {gpu_name} (compute capability "
                f"{capability[0]}.{capability[1]}); TensorRT needs {need[0]}.{need[1]} or newer"
            )


def check_strongly_typed(
    spec: BuildSpec, assignments: Mapping[str, str], model: onnx.ModelProto, version: str
) -> None:
    """InvalidConfigError for what TensorRT 11 cannot build: int8 without Q/DQ nodes (its
    calibrators are gone), and a per-layer int8 node that no DequantizeLinear feeds."""
    if spec.bit_width == 8 and spec.option("int8_source") != "qdq":
        raise InvalidConfigError(
            f"int8_source={spec.option('int8_source')!r} is not buildable with TensorRT "
            f"{version}: TensorRT 11 removed the int8 calibrators and takes int8 only from "
            "Q/DQ nodes; allowed there: int8_source='qdq'"
        )
    int8 = sorted(n for n, p in assignments.items() if p == "int8")
    if not int8:
        return
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    nodes = {n.name: n for n in model.graph.node}
    missing = [n for n in int8 if not any(i in dequantized for i in nodes[n].input)]
    if missing:
        raise InvalidConfigError(
            f"precision 'int8' for ONNX nodes {missing} is not buildable with TensorRT {version}: "
            "strong typing takes int8 from Q/DQ nodes, and no DequantizeLinear feeds them "
            "(a layer in excluded_layers, or one ONNX Runtime's quantizer left in float)"
        )


