"""The standard joint space for a task: what a user gets from ``SearchSpace.standard(task)``.

The engine capability matrix lives here as forbidden combinations, so a config that an
engine cannot build (int4 on the torch engine, 16-bit on ONNX Runtime's CPU provider) is
never sampled and never wastes a trial.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from paretotune.errors import ConfigError
from paretotune.space.dimensions import Choice, Dimension, Float, PerLayer
from paretotune.space.space import SearchSpace

log = logging.getLogger(__name__)

#: bit widths: 32 = fp32, 16 = bf16/fp16, 8 = int8, 4 = int4 weight-only
BIT_WIDTHS = (32, 16, 8, 4)

#: (engine, bit_width) pairs no engine of that name can build.
UNBUILDABLE: tuple[dict[str, Any], ...] = (
    {"engine": "torch", "bit_width": 4},
    {"engine": "onnxruntime", "bit_width": 16},
)


def standard_space(
    task: Any,
    *,
    engines: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 8, 32),
    threads: Sequence[int] = (1,),
    max_prune_ratio: float = 0.5,
    granularity: str = "layer",
    bit_widths: Sequence[int] = BIT_WIDTHS,
) -> SearchSpace:
    """Prune ratio, bit width, quantization mode, per-layer precision, batch size, engine and
    intra-op threads, bound to ``task.layers`` and to the engines available where we run."""
    layers: Mapping[str, str] = getattr(task, "layers", None) or {}
    if engines is None:
        available = getattr(task, "available_engines", None)
        engines = list(available()) if callable(available) else ["torch", "onnxruntime"]
    if not engines:
        raise ConfigError("standard space: no engine is available on this machine")
    bad = [b for b in bit_widths if b not in BIT_WIDTHS]
    if bad:
        raise ConfigError(f"standard space: bit_widths {bad} not allowed; allowed: {list(BIT_WIDTHS)}")
    default_engine = "torch" if "torch" in engines else engines[0]
    dims: dict[str, Dimension] = {
        "engine": Choice(list(engines), default=default_engine),
        "prune_ratio": Float(0.0, max_prune_ratio, step=0.1),
        "bit_width": Choice(list(bit_widths), default=32 if 32 in bit_widths else None),
        "batch_size": Choice(list(batch_sizes)),
        "threads": Choice(list(threads)),
    }
    if "onnxruntime" in engines and 8 in bit_widths:
        ort_int8 = {"engine": "onnxruntime", "bit_width": 8}
        dims["quant_mode"] = Choice(["dynamic", "static"], when=ort_int8)
        dims["per_channel"] = Choice([False, True], when=ort_int8)
    if layers and 8 in bit_widths:
        dims["precision"] = PerLayer(
            ["int8", "fp32"], layers=dict(layers), granularity=granularity, when={"bit_width": 8}
        )
    elif not layers:
        log.info("standard space: the task lists no quantizable layers, so no per-layer precision")
    forbidden = [
        rule
        for rule in UNBUILDABLE
        if rule["engine"] in engines and rule["bit_width"] in bit_widths
    ]
    return SearchSpace(dims, forbidden=forbidden)
