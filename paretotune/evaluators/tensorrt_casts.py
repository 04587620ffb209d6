"""TensorRT 11's strong typing takes precision from the ONNX graph's types: the fp16/bf16 Casts
put around the nodes that run in half (`cast_nodes_to_half`), keeping the engine's I/O in the
model's types, and the check for FP8 Q/DQ nodes. Pure ONNX rewriting: no TensorRT needed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx

    from paretotune.evaluators.config import BuildSpec

logger = logging.getLogger(__name__)

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


