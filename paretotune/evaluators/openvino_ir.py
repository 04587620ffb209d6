"""OpenVINO's IR as paretotune stores it, and the graph queries the engine asks of it.

The artifact is model.xml + model.bin behind a fixed header (`pack_ir`): plain data, never a
pickle, and OpenVINO loads no code from an IR unless an extension was registered. The graph
helpers find weight ops, map the user's excluded layers onto them, read back which weights NNCF
quantized, and make the task's dynamic axes dynamic.
"""

from __future__ import annotations

import logging
import re
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretotune.errors import EvaluationError

if TYPE_CHECKING:
    import openvino as ov

logger = logging.getLogger(__name__)

#: OpenVINO op types that carry a layer's weights (MatMul/Gemm become MatMul, Conv Convolution)
WEIGHT_OP_TYPES = ("MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData")
#: ops that only reshape or dequantize a weight on its way into a weight op
_WEIGHT_PATH_OPS = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze")
_LOW_PRECISION = ("i8", "u8", "i4", "u4", "nf4", "f8e4m3", "f8e5m2")
#: characters of OpenVINO's or NNCF's message kept in an error
MESSAGE_CHARS = 600



# -- the artifact: model.xml + model.bin behind a header ------------------------------------

MAGIC = b"PTOVIR01"
_HEADER = struct.Struct("<8sQQ")  # magic, len(xml), len(bin)
IR_FILES = ("model.xml", "model.bin")


def pack_ir(xml: bytes, weights: bytes) -> bytes:
    """One blob: MAGIC, the two lengths (little-endian uint64), the XML, the weights."""
    return _HEADER.pack(MAGIC, len(xml), len(weights)) + xml + weights


def unpack_ir(artifact: bytes) -> tuple[bytes, bytes]:
    """(model.xml, model.bin) of a `pack_ir` blob; EvaluationError for anything else."""
    if not isinstance(artifact, (bytes, bytearray, memoryview)):
        raise EvaluationError(
            f"openvino artifact must be bytes, got {type(artifact).__name__}"
        )
    data = bytes(artifact)
    if len(data) < _HEADER.size or data[: len(MAGIC)] != MAGIC:
        raise EvaluationError(
            f"openvino artifact must start with {MAGIC!r} (model.xml + model.bin), got "
            f"{data[: len(MAGIC)]!r}"
        )
    _, n_xml, n_bin = _HEADER.unpack_from(data)
    if _HEADER.size + n_xml + n_bin != len(data):
        raise EvaluationError(
            f"openvino artifact is {len(data)} bytes, but its header announces "
            f"{_HEADER.size} + {n_xml} (xml) + {n_bin} (bin)"
        )
    xml = data[_HEADER.size : _HEADER.size + n_xml]
    return xml, data[_HEADER.size + n_xml :]


def serialize_model(model: ov.Model) -> bytes:
    """The model as a packed IR, weights kept in their own precision (no fp16 compression).

    Ops named by a process-wide counter (`Constant_96`, by OpenVINO or NNCF) are renamed by
    their place in the graph first, so the same build gives the same bytes in every process.
    Weight ops keep their names: per-layer precision finds them by name.
    """

    import openvino as ov

    for index, op in enumerate(model.get_ordered_ops()):
        kind = op.get_type_name()
        if kind not in WEIGHT_OP_TYPES and re.fullmatch(rf"{kind}_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{kind}_pt{index}")
    with tempfile.TemporaryDirectory() as tmp:
        xml, weights = Path(tmp, IR_FILES[0]), Path(tmp, IR_FILES[1])
        ov.serialize(model, str(xml), str(weights))
        return pack_ir(xml.read_bytes(), weights.read_bytes())


def core() -> ov.Core:
    import openvino as ov

    return ov.Core()


def load_model(artifact: bytes) -> ov.Model:
    """The ov.Model of a packed IR (read from memory)."""
    xml, weights = unpack_ir(artifact)
    try:
        return core().read_model(xml, weights)
    except Exception as exc:  # noqa: BLE001 - OpenVINO's parser raises RuntimeError subclasses
        raise EvaluationError(
            f"openvino artifact is not a readable IR: {str(exc)[:MESSAGE_CHARS]}"
        ) from exc


# -- graph helpers --------------------------------------------------------------------------


def is_transformer(model: ov.Model) -> bool:
    """Attention in the graph: a Softmax and a MatMul of two activations (no constant side).

    Decides NNCF's `model_type=TRANSFORMER`, which keeps Softmax, LayerNorm and the residual
    adds out of int8 and applies SmoothQuant.
    """
    ops = model.get_ordered_ops()
    if not any(op.get_type_name() == "Softmax" for op in ops):
        return False
    return any(
        op.get_type_name() == "MatMul" and not any(_constant_source(op, i) for i in (0, 1))
        for op in ops
    )


def _constant_source(op: Any, port: int) -> bool:
    """Whether input `port` of `op` comes from a Constant, through dequantizing/reshaping ops."""
    node = op.input_value(port).get_node()
    for _ in range(8):
        kind = node.get_type_name()
        if kind == "Constant":
            return True
        if kind not in _WEIGHT_PATH_OPS:
            return False
        node = node.input_value(0).get_node()
    return False


def weight_ops(model: ov.Model) -> list[str]:
    """Friendly names of the ops that carry a weight (MatMul/Convolution with a constant input)."""
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in WEIGHT_OP_TYPES and _constant_source(op, 1)
    ]


def map_excluded_layers(
    onnx_bytes: bytes, model: ov.Model, layers: Sequence[str], excluded: Sequence[str]
) -> dict[str, list[str]]:
    """Each excluded layer (torch module or ONNX node name) -> its OpenVINO weight ops.

    Our names reach ONNX node names through `onnx_graph.layer_nodes`; OpenVINO's ONNX
    frontend keeps a node's name for its op, and names the weight op of a Conv or Gemm with a
    bias `<node>/WithoutBiases` (the bias Add keeps the node's name).
    """
    import onnx

    from paretotune.evaluators.onnx_graph import layer_nodes

    wanted = sorted(set(excluded))
    mapping = layer_nodes(onnx.load_from_string(onnx_bytes), list(dict.fromkeys([*layers, *wanted])))
    ov_ops = weight_ops(model)
    found: dict[str, list[str]] = {}
    for layer in wanted:
        names: list[str] = []
        for node in mapping.get(layer, []):
            names += [n for n in ov_ops if n == node or n.startswith(node + "/")]
        found[layer] = sorted(set(names))
    return found


def quantized_weight_ops(model: ov.Model | bytes) -> dict[str, str]:
    """Weight op (`weight_ops`) -> how it is quantized: a FakeQuantize/FakeConvert on an
    input, or a low-precision weight constant. Weight ops absent from it run in full precision."""
    if isinstance(model, (bytes, bytearray)):
        model = load_model(bytes(model))
    out: dict[str, str] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHT_OP_TYPES or not _constant_source(op, 1):
            continue
        how = []
        for port in range(op.get_input_size()):
            node = op.input_value(port).get_node()
            for _ in range(8):
                kind = node.get_type_name()
                if kind in ("FakeQuantize", "FakeConvert"):
                    how.append(f"{kind} on input {port}")
                    break
                if kind == "Constant":
                    precision = node.get_output_element_type(0).get_type_name()
                    if precision in _LOW_PRECISION:
                        how.append(f"{precision} weights on input {port}")
                    break
                if kind not in _WEIGHT_PATH_OPS:
                    break
                node = node.input_value(0).get_node()
        if how:
            out[op.get_friendly_name()] = ", ".join(how)
    return out


def make_dynamic(model: ov.Model, dynamic_axes: Mapping[str, Any] | None) -> None:
    """Make the input dims the task declares dynamic (batch, sequence) dynamic in the model,
    where a static ONNX file fixed them, so a batch cut to its longest real row runs."""
    import openvino as ov

    if not dynamic_axes:
        return
    shapes = {}
    for port in model.inputs:
        axes = dynamic_axes.get(port.get_any_name())
        if not axes:
            continue
        shape = port.get_partial_shape()
        if shape.rank.is_dynamic:
            continue
        dims = list(shape)
        changed = False
        for axis in axes:
            if int(axis) < len(dims) and dims[int(axis)].is_static:
                dims[int(axis)] = ov.Dimension()
                changed = True
        if changed:
            shapes[port.get_any_name()] = ov.PartialShape(dims)
    if shapes:
        logger.debug("making inputs dynamic for OpenVINO: %s", shapes)
        try:
            model.reshape(shapes)
        except Exception as exc:  # noqa: BLE001
            raise EvaluationError(
                f"OpenVINO cannot make the task's dynamic axes {shapes} dynamic: "
                f"{str(exc)[:MESSAGE_CHARS]}"
            ) from exc

