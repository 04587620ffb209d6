"""The Triton model repository's `config.pbtxt` for a bundle: tensors, the dynamic batcher the
study measured, and the engine's backend (`Engine.triton_layout` in the engine registry)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from paretotune.errors import EvaluationError

if TYPE_CHECKING:
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.serving import BatcherConfig

#: numpy dtype name -> Triton data type
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "object": "TYPE_STRING",
}
#: microseconds Triton's dynamic batcher waits to fill a preferred batch
MAX_QUEUE_DELAY_US = 100


def triton_config(
    name: str,
    engine: str,
    artifact: str,
    io_spec: Mapping[str, Any],
    max_batch_size: int,
    threads: int,
    batcher: BatcherConfig | None = None,
    *,
    spec: BuildSpec | None = None,
) -> str:
    """A Triton `config.pbtxt` (protobuf text format of inference.ModelConfig).

    With batching (`max_batch_size` > 0) dims leave out the batch dimension. The dynamic
    batcher is the one a server or offline study measured (`batcher`: preferred sizes, queue
    delay, instance count); a single-stream study's prefers the trial's batch size. The
    backend or platform and its parameters are the engine's (`Engine.triton_layout`; `spec`:
    the trial's, for engines whose parameters follow its options).
    """
    from paretotune.evaluators import engines

    layout = engines.get(engine).triton_layout(threads, spec)

    def tensor(spec: Mapping[str, Any]) -> str:
        dtype = TRITON_TYPES.get(spec["dtype"])
        if dtype is None:
            raise EvaluationError(
                f"tensor {spec['name']!r} has dtype {spec['dtype']!r}, which Triton cannot serve; "
                f"supported: {sorted(TRITON_TYPES)}"
            )
        shape = list(spec["shape"][1:] if max_batch_size > 0 else spec["shape"])
        return (
            "  {\n"
            f"    name: {_quote(spec.get('triton_name', spec['name']))}\n"
            f"    data_type: {dtype}\n"
            f"    dims: [ {', '.join(str(d) for d in shape)} ]\n"
            "  }"
        )

    lines = [
        f"name: {_quote(name)}",
        *([f"platform: {_quote(layout.platform)}"] if layout.platform else []),
        f"backend: {_quote(layout.backend)}",
        f"max_batch_size: {int(max_batch_size)}",
        f"default_model_filename: {_quote(artifact)}",
        "input [\n" + ",\n".join(tensor(s) for s in io_spec["inputs"]) + "\n]",
        "output [\n" + ",\n".join(tensor(s) for s in io_spec["outputs"]) + "\n]",
    ]
    preferred = [int(max_batch_size)] if batcher is None else list(batcher.targets)
    delay = MAX_QUEUE_DELAY_US if batcher is None else batcher.max_queue_delay_us
    if max_batch_size > 0:
        lines.append(
            "dynamic_batching {\n"
            f"  preferred_batch_size: [ {', '.join(str(p) for p in preferred)} ]\n"
            f"  max_queue_delay_microseconds: {int(delay)}\n"
            "}"
        )
    count = 1 if batcher is None else batcher.instances
    lines.append(f"instance_group [\n  {{\n    count: {int(count)}\n    kind: {layout.kind}\n  }}\n]")
    for key, value in layout.parameters.items():
        lines.append(
            "parameters {\n"
            f"  key: {_quote(key)}\n"
            f"  value: {{ string_value: {_quote(str(value))} }}\n"
            "}"
        )
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return json.dumps(text)
