"""The `tensorrt` engine: ONNX -> TensorRT engine through the builder API, run through pycuda.

Two typing modes, chosen by the installed TensorRT's major version (`strongly_typed`):

- TensorRT 10 (weak typing): FP16/BF16 (`half`) and INT8 are builder flags; INT8 comes from
  IInt8EntropyCalibrator2 over the task's calibration batches or from the explicit Q/DQ nodes of
  ONNX Runtime's static-int8 model (`int8_source`). Per-layer precision sets `layer.precision`
  and the output types of the TensorRT layers made from each PyTorch layer's ONNX nodes, with
  OBEY_PRECISION_CONSTRAINTS; at bit_width 32 every other float layer is pinned to FLOAT, so a
  per-layer fp16 build is not fp16 everywhere (`apply_layer_precisions`).
- TensorRT 11 (strong typing, no precision flags, no calibrators): precision comes from the
  ONNX graph's types. Before parsing, fp16/bf16 Casts are put around the nodes that run in half
  (`cast_nodes_to_half`), keeping the engine's I/O in the model's types; INT8 and FP8 come only
  from Q/DQ nodes (`int8_source='qdq'`).

FP8 needs FP8 Q/DQ nodes in the ONNX model in both modes; each precision only where the GPU
supports it. One optimization profile: batch min 1, opt the trial's batch size, max the largest
batch the task feeds; other dynamic axes from 1 to the largest size in the task's data. Engines
are cached on disk by ONNX hash, build options, TensorRT version and GPU model. I/O: page-locked
host buffers and device buffers on one stream; CUDA events time the end-to-end batch (copies
included) and the compute alone, reported separately. The pycuda context pushed for this is
popped at exit (pycuda aborts the process when its context stack is not empty).

`tensorrt` and `pycuda` are imported only inside the functions that build or run an engine.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import EvaluationError, InvalidConfigError

if TYPE_CHECKING:
    import onnx

    from paretotune.evaluators.cache import ArtifactCache
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

logger = logging.getLogger(__name__)

ENGINE_FORMAT = 1  # bump when the engine cache layout changes
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
NUMPY_TYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


def numpy_dtype(trt_dtype: Any) -> np.dtype[Any]:
    """The numpy dtype of a TensorRT I/O tensor type."""
    name = _type_name(trt_dtype)
    if name not in NUMPY_TYPES:
        raise EvaluationError(
            f"a TensorRT engine input or output has type {name}, which numpy cannot hold; "
            f"supported I/O types: {sorted(NUMPY_TYPES)}"
        )
    return np.dtype(NUMPY_TYPES[name])


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


def _type_name(value: Any) -> str:
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
        if any(_type_name(t.dtype) not in FLOAT_TENSOR_TYPES for t in outputs):
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


# -- strong typing: fp16/bf16 from Casts in the ONNX graph -------------------------------------

#: precision name -> onnx.TensorProto element type
ONNX_HALF_TYPES = {"fp16": 10, "bf16": 16}  # TensorProto.FLOAT16, TensorProto.BFLOAT16
ONNX_FLOAT = 1  # TensorProto.FLOAT
#: largest finite value of each half type: float constants are clipped to it, so a mask of
#: float32's lowest value stays finite (it would become -inf, and 0 * -inf is NaN)
HALF_MAX = {10: 65504.0, 16: 3.3895313892515355e38}
#: ops never run in half: their output type is an attribute or a fixed type, or they are the
#: Q/DQ and cast plumbing whose types the graph already states
NEVER_HALF = frozenset({
    "Shape", "Size", "Constant", "ConstantOfShape", "Cast", "CastLike", "QuantizeLinear",
    "DequantizeLinear", "DynamicQuantizeLinear", "Range", "RandomNormal", "RandomNormalLike",
    "RandomUniform", "RandomUniformLike", "Multinomial", "EyeLike", "If", "Loop", "Scan",
})
#: op -> float inputs that keep float32 (Resize's roi and scales)
FLOAT_INPUTS = {"Resize": frozenset({1, 2}), "Upsample": frozenset({1})}
#: op -> float outputs whose type is not the inputs' (LayerNormalization's mean and inv std dev)
FLOAT_OUTPUTS = {"LayerNormalization": frozenset({1, 2})}


def half_plan(
    model: onnx.ModelProto, spec: BuildSpec, assignments: Mapping[str, str]
) -> dict[str, str]:
    """ONNX node -> fp16|bf16 for a strongly typed build: at bit_width 16 every node in the
    `half` precision except the per-layer fp32 ones; otherwise only the per-layer fp16/bf16
    nodes. Nodes that cannot run in half are left out later, by `cast_nodes_to_half`."""
    plan: dict[str, str] = {}
    if spec.bit_width == 16:
        half = spec.option("half")
        plan = {n.name: half for n in model.graph.node if n.name}
    for node, precision in assignments.items():
        if precision in ONNX_HALF_TYPES:
            plan[node] = precision
        else:
            plan.pop(node, None)  # fp32 (or int8 from Q/DQ) keeps its graph types
    return plan


@dataclass
class CastReport:
    """What `cast_nodes_to_half` did: nodes per half type, Casts and converted constants put in,
    and the planned nodes left in float (with why)."""

    half_nodes: dict[str, int] = field(default_factory=dict)
    casts: int = 0
    constants: int = 0
    left_in_float: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "half_nodes": self.half_nodes,
            "casts_inserted": self.casts,
            "constants_converted": self.constants,
            "left_in_float": dict(sorted(self.left_in_float.items())[:20]),
            "left_in_float_count": len(self.left_in_float),
        }


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX element type, from the graph and ONNX shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - inference failing leaves types unknown, not wrong
        logger.debug("ONNX shape inference failed before the half casts: %s", exc)
        inferred = model
    graph = inferred.graph
    types: dict[str, int] = {}
    for info in [*graph.value_info, *graph.input, *graph.output]:
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def _constant_array(node: onnx.NodeProto) -> np.ndarray | None:
    """The float32 value of a Constant node, when it holds one."""
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == ONNX_FLOAT:
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
    return None


def _half_initializer(name: str, values: np.ndarray, elem_type: int) -> onnx.TensorProto:
    """`values` (float32) as an fp16 or bf16 initializer, finite values clipped to its range."""
    from onnx import helper, numpy_helper

    values = np.asarray(values, dtype=np.float32)
    limit = HALF_MAX[elem_type]
    values = np.where(np.isfinite(values), np.clip(values, -limit, limit), values)
    if elem_type == ONNX_HALF_TYPES["fp16"]:
        return numpy_helper.from_array(values.astype(np.float16), name)
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # nearest even
    rounded[np.isnan(values)] = 0x7FC0
    return helper.make_tensor(name, elem_type, list(values.shape), rounded.tobytes(), raw=True)


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Every tensor name the subgraphs of a control-flow node read (outer-scope ones too)."""
    names: set[str] = set()
    for attr in node.attribute:
        for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in graph.node:
                names.update(inner.input)
                names |= _subgraph_inputs(inner)
    return names


def cast_nodes_to_half(
    model: onnx.ModelProto, plan: Mapping[str, str]
) -> tuple[onnx.ModelProto, CastReport]:
    """A copy of `model` where each node of `plan` (node -> fp16|bf16) computes in that type.

    Each float32 input of such a node is read through a Cast (one per tensor and type), or as a
    converted initializer when it is a constant; each float32 output is produced in half and
    cast back to float32 under its own name wherever a float consumer or the graph's outputs
    need it. The graph's inputs and outputs keep their types. Nodes that cannot run in half
    (NEVER_HALF ops, other domains, unknown input types) stay in float32 and are reported.
    """
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    types = _elem_types(model)
    constants: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            value = _constant_array(node)
            if value is not None:
                constants[node.output[0]] = value
    initializers = {i.name: i for i in graph.initializer if i.data_type == ONNX_FLOAT}
    report = CastReport()

    def float_inputs(node: onnx.NodeProto) -> list[int]:
        keep = FLOAT_INPUTS.get(node.op_type, frozenset())
        return [i for i, name in enumerate(node.input)
                if name and i not in keep and types.get(name) == ONNX_FLOAT]

    compute: dict[str, int] = {}  # node name -> the half type it computes in
    for node in graph.node:
        precision = plan.get(node.name)
        if precision is None:
            continue
        why = None
        if node.op_type in NEVER_HALF:
            why = f"{node.op_type} keeps its graph types"
        elif node.domain not in ("", "ai.onnx"):
            why = f"op {node.domain}.{node.op_type} of another domain"
        elif any(name and name not in types for name in node.input):
            why = "an input of unknown type"
        elif not float_inputs(node):
            why = "no float32 input"
        if why is None:
            compute[node.name] = ONNX_HALF_TYPES[precision]
        elif any(name and types.get(name) == ONNX_FLOAT for name in node.output):
            report.left_in_float[node.name] = why

    produced: dict[str, tuple[str, int]] = {}  # float32 tensor -> (half name, half type)
    for node in graph.node:
        if node.name in compute:
            skip = FLOAT_OUTPUTS.get(node.op_type, frozenset())
            for j, name in enumerate(node.output):
                if name and j not in skip and types.get(name) == ONNX_FLOAT:
                    produced[name] = (f"{name}__half", compute[node.name])
    float_needed = {o.name for o in graph.output}
    for node in graph.node:
        if node.name not in compute:
            float_needed.update(node.input)
            float_needed |= _subgraph_inputs(node)

    names = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    variants: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []
    suffix = {10: "fp16", 16: "bf16"}

    def variant(name: str, elem_type: int) -> str:
        """The name of `name` in `elem_type`, putting in its Cast or constant on first use."""
        if name in produced and produced[name][1] == elem_type:
            return produced[name][0]
        key = (name, elem_type)
        if key in variants:
            return variants[key]
        target = f"{name}__{suffix[elem_type]}"
        while target in names:
            target += "_"
        names.add(target)
        source = name if name not in produced else produced[name][0]
        if name in initializers or name in constants:
            values = constants.get(name)
            if values is None:
                values = numpy_helper.to_array(initializers[name])
            graph.initializer.append(_half_initializer(target, values, elem_type))
            report.constants += 1
        else:
            new_nodes.append(helper.make_node(
                "Cast", [source], [target], to=elem_type, name=f"{target}/Cast"
            ))
            report.casts += 1
        variants[key] = target
        return target

    for node in list(graph.node):
        if node.name in compute:
            elem_type = compute[node.name]
            for i in float_inputs(node):
                node.input[i] = variant(node.input[i], elem_type)
            new_nodes.append(node)
            report.half_nodes[suffix[elem_type]] = report.half_nodes.get(suffix[elem_type], 0) + 1
            for j, name in enumerate(node.output):
                if name in produced:
                    node.output[j] = produced[name][0]
                    if name in float_needed:  # back to float32, under the original name
                        new_nodes.append(helper.make_node(
                            "Cast", [produced[name][0]], [name], to=ONNX_FLOAT,
                            name=f"{name}__float/Cast",
                        ))
                        report.casts += 1
            continue
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # stale for the renamed tensors; TensorRT infers its own shapes
    return out, report


def has_fp8_qdq(model: onnx.ModelProto) -> bool:
    """True when a QuantizeLinear of the model produces FLOAT8E4M3FN (its zero point's type)."""
    from onnx import TensorProto

    fp8 = {getattr(TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E5M2") if hasattr(TensorProto, n)}
    inits = {init.name: init.data_type for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            if inits.get(node.input[2]) in fp8:
                return True
    return False


# -- the optimization profile --------------------------------------------------------------------


def profile_shapes(
    input_shapes: Mapping[str, Sequence[int]],
    batches: Sequence[Mapping[str, np.ndarray]],
    timing_batch: Mapping[str, np.ndarray],
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) for each network input whose shape has dynamic (-1) dims.

    opt is the timing batch (the trial's batch size); max covers every batch the task feeds
    (validation, calibration, example), so the accuracy pass runs on the same engine; min is 1.
    """
    out = {}
    for name, shape in input_shapes.items():
        if all(d >= 0 for d in shape):
            continue
        if name not in timing_batch:
            raise EvaluationError(
                f"TensorRT input {name!r} has dynamic dims {list(shape)}, and the task has no "
                f"input of that name; its inputs: {list(timing_batch)}"
            )
        opt = tuple(int(d) for d in timing_batch[name].shape)
        low, high = [], []
        for axis, dim in enumerate(shape):
            if dim >= 0:
                low.append(dim)
                high.append(dim)
                continue
            sizes = [int(b[name].shape[axis]) for b in batches if name in b] + [opt[axis]]
            low.append(1)
            high.append(max(sizes))
        out[name] = (tuple(low), opt, tuple(high))
    return out


# -- the engine cache ----------------------------------------------------------------------------


def engine_cache_key(
    onnx_bytes: bytes, build: Mapping[str, Any], trt_version: str, gpu: Mapping[str, Any]
) -> str:
    """Key of a serialized engine: ONNX content hash, build options, TensorRT version and the
    GPU model (name and compute capability). Plans are not portable across either."""
    from paretotune.evaluators.cache import cache_key

    return cache_key(
        "tensorrt-engine",
        ENGINE_FORMAT,
        hashlib.sha256(onnx_bytes).hexdigest(),
        dict(build),
        trt_version,
        {"name": gpu.get("name"), "capability": list(gpu.get("capability", ()))},
    )


def engine_build_options(spec: BuildSpec, profiles: Mapping[str, Any]) -> dict[str, Any]:
    """Everything besides the ONNX model that decides the built engine."""
    return {
        "bit_width": spec.bit_width,
        "options": [list(p) for p in spec.options],
        "layer_precisions": [list(p) for p in spec.layer_precisions],
        "profile": {k: [list(s) for s in v] for k, v in sorted(profiles.items())},
    }


# -- CUDA through pycuda -------------------------------------------------------------------------


_CUDA_CONTEXT: Any = None


def cuda() -> Any:
    """pycuda.driver with device 0's primary context current (the context PyTorch and the
    CUDA runtime share), pushed once per process and popped at exit: pycuda calls abort() at
    exit when its context stack is not empty, so a passing run would end with SIGABRT."""
    global _CUDA_CONTEXT
    import pycuda.driver as driver

    if _CUDA_CONTEXT is None:
        driver.init()
        if driver.Device.count() == 0:
            raise EvaluationError("engine='tensorrt' needs a CUDA device, and pycuda finds none")
        context = driver.Device(0).retain_primary_context()
        context.push()
        _CUDA_CONTEXT = context
        atexit.register(release_cuda)
    return driver


def release_cuda() -> None:
    """Pop the context `cuda` pushed (registered at exit; safe to call twice), and clear
    pycuda's context caches as pycuda.autoprimaryctx does."""
    global _CUDA_CONTEXT
    context, _CUDA_CONTEXT = _CUDA_CONTEXT, None
    if context is None:
        return
    try:
        context.pop()
    except Exception as exc:  # noqa: BLE001 - at exit a failed pop must not hide the real error
        logger.warning("popping the pycuda context failed: %s", exc)
        return
    try:
        from pycuda.tools import clear_context_caches
    except ImportError:
        return
    clear_context_caches()


def gpu_identity() -> dict[str, Any]:
    """The GPU an engine is built for: name and compute capability (device 0 of this process)."""
    driver = cuda()
    device = driver.Device(0)
    return {"name": device.name(), "capability": tuple(device.compute_capability())}


# -- building ------------------------------------------------------------------------------------


def _calibrator(
    trt: Any, batches: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]
) -> Any:
    """IInt8EntropyCalibrator2 over `batches` (cut to the first batch's shape, which is the
    calibration profile), copying each into device buffers it owns."""
    driver = cuda()
    first = batches[0]
    shapes = {n: first[n].shape for n in names}
    usable = [b for b in batches if all(b[n].shape == shapes[n] for n in names)]
    if len(usable) < len(batches):
        logger.info(
            "TensorRT calibration uses %d of %d calibration batches (the others differ in "
            "shape from the first)", len(usable), len(batches)
        )

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(usable)
            self.device = {
                n: driver.mem_alloc(np.ascontiguousarray(first[n]).nbytes) for n in names
            }
            self.cache: bytes | None = None

        def get_batch_size(self) -> int:
            return int(next(iter(shapes.values()))[0])

        def get_batch(self, names_asked: Sequence[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            for n in names:
                driver.memcpy_htod(self.device[n], np.ascontiguousarray(batch[n]))
            return [int(self.device[n]) for n in names_asked]

        def read_calibration_cache(self) -> bytes | None:
            return self.cache

        def write_calibration_cache(self, cache: bytes) -> None:
            self.cache = bytes(cache)

    return Calibrator(), shapes


def network_flags(trt: Any) -> int:
    """create_network's flags: EXPLICIT_BATCH before TensorRT 10 (the default since), and
    STRONGLY_TYPED from TensorRT 11, where it is the only mode (the flag is accepted there)."""
    major = trt_major(trt)
    kinds = getattr(trt, "NetworkDefinitionCreationFlag", None)
    flags = 0
    if kinds is not None and major < 10:
        flags |= 1 << int(kinds.EXPLICIT_BATCH)
    if kinds is not None and major >= STRONGLY_TYPED_MAJOR and hasattr(kinds, "STRONGLY_TYPED"):
        flags |= 1 << int(kinds.STRONGLY_TYPED)
    return flags


def _weak_typing(
    trt: Any,
    builder: Any,
    network: Any,
    config: Any,
    spec: BuildSpec,
    task: Task,
    needed: Sequence[str],
    input_shapes: Mapping[str, Any],
    assignments: Mapping[str, str],
    details: dict[str, Any],
) -> None:
    """TensorRT 10's precision: the builder flags, the int8 calibrator and the per-layer
    constraints (other layers pinned to FLOAT at bit_width 32)."""
    for precision in needed:
        config.set_flag(getattr(trt.BuilderFlag, PRECISION_FLAGS[precision]))
    if "int8" in needed and spec.option("int8_source") == "calibration":
        names = [n for n in input_shapes if n in task.example_inputs]
        calibrator, shapes = _calibrator(trt, task.calibration, names)
        config.int8_calibrator = calibrator
        calibration_profile = builder.create_optimization_profile()
        for name in names:
            calibration_profile.set_shape(name, shapes[name], shapes[name], shapes[name])
        config.set_calibration_profile(calibration_profile)
        details["int8_source"] = "calibration (IInt8EntropyCalibrator2)"
    elif "int8" in needed:
        details["int8_source"] = "explicit Q/DQ (the ONNX Runtime static int8 model)"
    pin = "fp32" if spec.bit_width == 32 else None
    report = apply_layer_precisions(network, config, assignments, trt, pin)
    details["layer_precision"] = report.to_dict()
    if report.unmatched_nodes:
        logger.warning(
            "TensorRT per-layer precision: ONNX nodes %s match no TensorRT layer",
            report.unmatched_nodes,
        )


def build_tensorrt(
    onnx_bytes: bytes,
    spec: BuildSpec,
    task: Task,
    layers: Sequence[str],
    cache: ArtifactCache | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Build (or load from `cache`) the serialized engine for `spec` from an ONNX model, which
    is already the Q/DQ model when `int8_source='qdq'`. Returns the plan and build details."""
    import onnx
    import tensorrt as trt

    model = onnx.load_from_string(onnx_bytes)
    gpu = gpu_identity()
    fp8 = has_fp8_qdq(model)
    needed = precisions_needed(spec, fp8)
    check_gpu_supports(needed, gpu["capability"], gpu["name"], trt)
    assignments, unmapped = node_precisions(spec.layer_precisions, layer_node_map(model, layers))
    strong = strongly_typed(trt)
    parsed = onnx_bytes
    cast_report: CastReport | None = None
    if strong:
        check_strongly_typed(spec, assignments, model, trt.__version__)
        halves = half_plan(model, spec, assignments)
        if halves:
            typed, cast_report = cast_nodes_to_half(model, halves)
            parsed = typed.SerializeToString()

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(parsed):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EvaluationError("TensorRT's ONNX parser failed: " + " | ".join(errors)[:1200])
    input_shapes = {
        network.get_input(i).name: tuple(network.get_input(i).shape)
        for i in range(network.num_inputs)
    }
    batches = [task.example_inputs, *task.calibration, *(inputs for inputs, _ in task.validation)]
    profiles = profile_shapes(input_shapes, batches, task.timing_batch(spec.batch_size))
    build = engine_build_options(spec, profiles)
    key = engine_cache_key(onnx_bytes, build, trt.__version__, gpu)
    details: dict[str, Any] = {
        "tensorrt_version": trt.__version__,
        "typing": "strong (precision from the ONNX graph's types)" if strong
        else "weak (builder precision flags)",
        "gpu": {"name": gpu["name"], "capability": list(gpu["capability"])},
        "precisions": needed,
        "profile": build["profile"],
        "engine_cache_key": key,
    }
    if cast_report is not None:
        details["graph_casts"] = cast_report.to_dict()
    if unmapped:
        details["unmapped_layers"] = unmapped
    if cache is not None:
        entry = cache.get(key)
        if entry is not None and entry.data is not None:
            details.update(entry.meta.get("details", {}), engine_cache_hit=True)
            return entry.data, details

    config = builder.create_builder_config()
    workspace_mb = spec.option("workspace_mb")
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * 1024**2)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profiles.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    if strong:
        if "int8" in needed:
            details["int8_source"] = "explicit Q/DQ (the ONNX Runtime static int8 model)"
    else:
        _weak_typing(
            trt, builder, network, config, spec, task, needed, input_shapes, assignments, details
        )
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EvaluationError(
            f"TensorRT could not build the engine (precisions {needed}, workspace_mb="
            f"{workspace_mb}); see TensorRT's log above for the layer it stopped at"
        )
    plan = bytes(serialized)
    details["engine_build_s"] = round(time.perf_counter() - started, 3)
    if cache is not None:
        cache.put(key, {"kind": "tensorrt engine", "details": details}, plan)
    return plan, details


# -- running -------------------------------------------------------------------------------------


class _Buffers:
    """Page-locked host and device buffers for one set of input shapes."""

    def __init__(self, driver: Any, engine: Any, context: Any, trt: Any,
                 shapes: Mapping[str, tuple[int, ...]], inputs: Sequence[str],
                 outputs: Sequence[str]) -> None:
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, Any] = {}
        for name in inputs:
            context.set_input_shape(name, shapes[name])
        for name in [*inputs, *outputs]:
            shape = tuple(context.get_tensor_shape(name))
            dtype = numpy_dtype(engine.get_tensor_dtype(name))
            self.host[name] = driver.pagelocked_empty(shape, dtype)
            self.device[name] = driver.mem_alloc(max(self.host[name].nbytes, 1))
            context.set_tensor_address(name, int(self.device[name]))


class TensorRTRunner:
    """A deserialized engine with one execution context, a stream and CUDA events."""

    engine = "tensorrt"

    def __init__(self, plan: bytes, input_names: Sequence[str]) -> None:
        import tensorrt as trt

        self._trt = trt
        self._driver = cuda()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EvaluationError("TensorRT could not deserialize the engine plan")
        self._context = self._engine.create_execution_context()
        self._stream = self._driver.Stream()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        missing = [n for n in self.inputs if n not in input_names]
        if missing:
            raise EvaluationError(
                f"the TensorRT engine needs inputs {missing}; the task gives {list(input_names)}"
            )
        self._max_batch = min(
            int(self._engine.get_tensor_profile_shape(n, 0)[2][0]) for n in self.inputs
        ) if self.inputs else 1
        self._buffers: dict[tuple[Any, ...], _Buffers] = {}
        self._events = [self._driver.Event() for _ in range(4)]

    def _bind(self, inputs: Mapping[str, np.ndarray]) -> _Buffers:
        shapes = {n: tuple(inputs[n].shape) for n in self.inputs}
        key = tuple(sorted(shapes.items()))
        buffers = self._buffers.get(key)
        if buffers is None:
            buffers = _Buffers(self._driver, self._engine, self._context, self._trt, shapes,
                               self.inputs, self.outputs)
            self._buffers = {key: buffers}  # one shape at a time: the context holds one
        for name in self.inputs:
            np.copyto(buffers.host[name], inputs[name], casting="same_kind")
        return buffers

    def _enqueue(self, buffers: _Buffers, copies: bool, events: Sequence[Any] = ()) -> None:
        """H2D, compute, D2H on the stream; `events` (4) mark start, compute start/end, end."""
        driver, stream = self._driver, self._stream
        if events:
            events[0].record(stream)
        if copies:
            for name in self.inputs:
                driver.memcpy_htod_async(buffers.device[name], buffers.host[name], stream)
        if events:
            events[1].record(stream)
        if not self._context.execute_async_v3(stream.handle):
            raise EvaluationError("TensorRT execute_async_v3 failed")
        if events:
            events[2].record(stream)
        if copies:
            for name in self.outputs:
                driver.memcpy_dtoh_async(buffers.host[name], buffers.device[name], stream)
        if events:
            events[3].record(stream)

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """One batch end to end (copies in, compute, copies out, synchronize)."""
        buffers = self._bind(inputs)

        def run() -> Any:
            self._enqueue(buffers, copies=True)
            self._stream.synchronize()
            return buffers.host[self.outputs[0]]

        return run

    def prepare_timed(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], tuple[float, float]]:
        """One batch end to end, measured by CUDA events: (end-to-end ms, compute ms)."""
        buffers = self._bind(inputs)
        events = self._events

        def sample() -> tuple[float, float]:
            self._enqueue(buffers, copies=True, events=events)
            events[3].synchronize()
            return events[3].time_since(events[0]), events[2].time_since(events[1])

        return sample

    def run_all(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every output (engine order), in chunks of at most the profile's max batch."""
        rows = int(inputs[self.inputs[0]].shape[0])
        chunks: list[list[np.ndarray]] = []
        for start in range(0, rows, self._max_batch):
            chunk = {n: np.ascontiguousarray(inputs[n][start : start + self._max_batch])
                     for n in self.inputs}
            buffers = self._bind(chunk)
            self._enqueue(buffers, copies=True)
            self._stream.synchronize()
            chunks.append([np.array(buffers.host[n], copy=True) for n in self.outputs])
        return [np.concatenate([c[i] for c in chunks], axis=0) for i in range(len(self.outputs))]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The first output as float32."""
        return np.asarray(self.run_all(inputs)[0], dtype=np.float32)


def plan_io(plan: bytes) -> dict[str, Any]:
    """Names, numpy dtypes and shapes (-1 for dynamic) of an engine's inputs and outputs."""
    import tensorrt as trt

    cuda()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EvaluationError("TensorRT could not deserialize the engine plan")
    out: dict[str, Any] = {"inputs": [], "outputs": []}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        spec = {
            "name": name,
            "dtype": numpy_dtype(engine.get_tensor_dtype(name)).name,
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
        }
        kind = "inputs" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "outputs"
        out[kind].append(spec)
    return out
