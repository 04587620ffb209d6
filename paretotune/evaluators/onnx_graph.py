"""The ONNX side every ONNX-based engine shares: the fp32 export of the task's (pruned) model,
and the graph helpers that map our layer names to ONNX nodes.

ONNX Runtime, TensorRT and OpenVINO all start from this export; none of them imports another
engine's module for it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import EvaluationError

if TYPE_CHECKING:
    import onnx
    import torch

    from paretotune.evaluators.task import Task

logger = logging.getLogger(__name__)

OPSET = 17
WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
MAX_MESSAGE = 600  # characters of each exporter's message kept in the trial's reason


@contextmanager
def quiet() -> Iterator[None]:
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
        with tempfile.TemporaryDirectory() as tmp, quiet():
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


def module_path(node: onnx.NodeProto) -> str | None:
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
        candidates = [node.name, module_path(node), node.input[1].removesuffix(".weight")]
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


def onnx_summary(model: bytes) -> dict[str, int]:
    """Op-type counts of a model, for details and tests."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load_from_string(model).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
