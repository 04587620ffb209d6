"""The standard joint space for a task: what a user gets from ``SearchSpace.standard(task)``.

The engines' capabilities arrive as data (``task.engine_capabilities()``, or ``capabilities=``:
engine -> bit widths buildable here, int8 modes, per_channel, searchable options) and become
dimensions and forbidden combinations, so a config an engine cannot build (int4 on the torch
engine, 16-bit on ONNX Runtime's CPU provider) is never sampled and never wastes a trial. This
module imports nothing of the evaluators: the capability matrix lives once, in the engines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from paretotune.errors import ConfigError
from paretotune.space.dimensions import Choice, Dimension, Float, PerLayer
from paretotune.space.scenario import Offline, Scenario, Server, scenario_from_dict
from paretotune.space.space import SearchSpace

log = logging.getLogger(__name__)

#: bit widths: 32 = fp32, 16 = bf16/fp16, 8 = int8, 4 = int4 weight-only
BIT_WIDTHS = (32, 16, 8, 4)
#: prune ratios searched (step 0.1) for a task with a finetune hook
DEFAULT_MAX_PRUNE_RATIO = 0.5
#: the dynamic batcher's settings searched under a server or offline scenario
DEFAULT_MAX_BATCH_SIZES = (1, 4, 8, 16, 32)
DEFAULT_QUEUE_DELAYS_US = (0, 500, 2000, 5000)
DEFAULT_INSTANCES = (1, 2)

def standard_space(
    task: Any,
    *,
    engines: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 8, 32),
    threads: Sequence[int] = (1,),
    max_prune_ratio: float | None = None,
    granularity: str = "layer",
    bit_widths: Sequence[int] = BIT_WIDTHS,
    scenario: Scenario | Mapping[str, Any] | None = None,
    max_batch_sizes: Sequence[int] = DEFAULT_MAX_BATCH_SIZES,
    queue_delays_us: Sequence[int] = DEFAULT_QUEUE_DELAYS_US,
    instances: Sequence[int] = DEFAULT_INSTANCES,
    capabilities: Mapping[str, Mapping[str, Any]] | None = None,
) -> SearchSpace:
    """Prune ratio, bit width, quantization mode, per-layer precision, batch size, engine and
    intra-op threads, bound to ``task.layers`` and to the engines available where we run.

    ``max_prune_ratio``: None (default) searches 0-0.5 when the task has a ``finetune`` hook
    and leaves pruning out when it has none: structured pruning without recovery training
    costs a pretrained model most of its accuracy (all-MiniLM-L6-v2 keeps 0.91 fidelity after
    removing 5% of its heads and neurons), so those trials would be wasted. Give a ratio to
    search pruning anyway; 0 leaves it out.

    Under a server or offline ``scenario`` the dynamic batcher is searched in place of a fixed
    batch size: ``max_batch_size``, ``max_queue_delay_us`` (server only, where batches can
    form) and ``instances`` (engine instances, each with ``threads`` intra-op threads; a
    combination with instances x threads above this machine's cores is forbidden).

    ``capabilities``: engine -> what it can build (default ``task.engine_capabilities()``);
    without them no engine-specific dimension or rule is added."""
    layers: Mapping[str, str] = getattr(task, "layers", None) or {}
    if engines is None:
        available = getattr(task, "available_engines", None)
        engines = list(available()) if callable(available) else ["torch", "onnxruntime"]
        unavailable = getattr(task, "unavailable_engines", None)
        left_out = unavailable() if callable(unavailable) else {}
        if left_out:
            log.info(
                "standard space: engines left out, they cannot run here: %s",
                "; ".join(f"{engine}: {why}" for engine, why in left_out.items()),
            )
    if not engines:
        raise ConfigError("standard space: no engine is available on this machine")
    bad = [b for b in bit_widths if b not in BIT_WIDTHS]
    if bad:
        raise ConfigError(f"standard space: bit_widths {bad} not allowed; allowed: {list(BIT_WIDTHS)}")
    if capabilities is None:
        known = getattr(task, "engine_capabilities", None)
        capabilities = known() if callable(known) else {}
        if not capabilities:
            log.info("standard space: the task declares no engine capabilities, so no engine rules")
    caps = {e: capabilities[e] for e in engines if e in capabilities}
    if caps:  # a bit width no engine can build here is left out
        bit_widths = [b for b in bit_widths if any(b in c["bit_widths"] for c in caps.values())]
    default_engine = "torch" if "torch" in engines else engines[0]
    dims: dict[str, Dimension] = {"engine": Choice(list(engines), default=default_engine)}
    prune = _prune_range(task, max_prune_ratio)
    if prune:
        dims["prune_ratio"] = Float(0.0, prune, step=0.1)
    dims["bit_width"] = Choice(list(bit_widths), default=32 if 32 in bit_widths else None)
    serving = scenario_from_dict(scenario)
    batcher_forbidden: list[dict[str, Any]] = []
    if isinstance(serving, (Server, Offline)):
        batcher_forbidden = _batcher_dimensions(
            dims, serving, max_batch_sizes, queue_delays_us, instances, threads
        )
    else:
        dims["batch_size"] = Choice(list(batch_sizes))
    dims["threads"] = Choice(list(threads))
    forbidden = _engine_dimensions(dims, caps, bit_widths)
    if layers and 8 in bit_widths:
        dims["precision"] = PerLayer(
            ["int8", "fp32"], layers=dict(layers), granularity=granularity, when={"bit_width": 8}
        )
    elif not layers:
        log.info("standard space: the task lists no quantizable layers, so no per-layer precision")
    return SearchSpace(dims, forbidden=forbidden + batcher_forbidden)


def _batcher_dimensions(
    dims: dict[str, Dimension],
    scenario: Server | Offline,
    max_batch_sizes: Sequence[int],
    queue_delays_us: Sequence[int],
    instances: Sequence[int],
    threads: Sequence[int],
) -> list[dict[str, Any]]:
    """Add the batcher's dimensions; returns the rules that keep instances x threads within
    the cores (engine instances each run their own intra-op threads)."""
    for field, values in (("max_batch_sizes", max_batch_sizes), ("queue_delays_us", queue_delays_us),
                          ("instances", instances)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"standard space: {field} must be a non-empty list of integers, got {values!r}")
    dims["max_batch_size"] = Choice(list(max_batch_sizes))
    batching = [b for b in max_batch_sizes if b > 1]
    if isinstance(scenario, Server) and batching:
        # a request may wait the whole delay when its batch does not fill: a delay of the
        # bound or more can never meet it, so it is not searched
        delays = [d for d in queue_delays_us if d < scenario.p99_ms * 1000]
        if len(delays) < len(queue_delays_us):
            log.info("standard space: queue delays %s us left out, not below the p99 bound of %g ms",
                     [d for d in queue_delays_us if d not in delays], scenario.p99_ms)
        if delays:
            dims["max_queue_delay_us"] = Choice(delays, when={"max_batch_size": batching})
    dims["instances"] = Choice(list(instances))
    cores = os.cpu_count() or 1
    rules = [
        {"instances": i, "threads": t} for i in instances for t in threads if i * t > cores
    ]
    if len(rules) == len(instances) * len(threads):
        raise ConfigError(
            f"standard space: every instances x threads combination ({list(instances)} x "
            f"{list(threads)}) exceeds this machine's {cores} cores"
        )
    return rules


def _prune_range(task: Any, max_prune_ratio: float | None) -> float:
    """The largest prune ratio to search (0: no pruning dimension)."""
    if max_prune_ratio is not None:
        if not 0.0 <= max_prune_ratio < 1.0:
            raise ConfigError(
                f"standard space: max_prune_ratio must be in [0, 1), got {max_prune_ratio!r}"
            )
        return float(max_prune_ratio)
    if getattr(task, "is_onnx", False):
        return 0.0  # pruning needs the PyTorch module
    if getattr(task, "finetune", None) is None:
        log.info(
            "standard space: no pruning, the task has no finetune hook to recover accuracy "
            "after it (pass max_prune_ratio to search pruning anyway)"
        )
        return 0.0
    return DEFAULT_MAX_PRUNE_RATIO


def _engine_dimensions(
    dims: dict[str, Dimension], caps: Mapping[str, Mapping[str, Any]], bit_widths: Sequence[int]
) -> list[dict[str, Any]]:
    """Add the int8 and option dimensions the engines' capabilities make worth searching (where
    two or more values can differ); returns the rules forbidding what an engine cannot build."""
    rules: list[dict[str, Any]] = [
        {"engine": e, "bit_width": b} for e, c in caps.items() for b in bit_widths if b not in c["bit_widths"]
    ]
    int8 = [e for e, c in caps.items() if 8 in c["bit_widths"] and 8 in bit_widths]
    modes = [e for e in int8 if len(caps[e]["int8_modes"]) > 1]
    if modes:
        values = list(dict.fromkeys(m for e in modes for m in caps[e]["int8_modes"]))
        dims["quant_mode"] = Choice(values, when={"engine": modes, "bit_width": 8})
        rules += [{"engine": e, "quant_mode": m} for e in modes for m in values if m not in caps[e]["int8_modes"]]
    channel = [e for e in int8 if caps[e]["per_channel"]]
    if channel:
        # per-channel weight scales by default: they keep more accuracy than per-tensor at no
        # speed cost (benchmarks/engines.py times and scores both; docs/benchmarks.md)
        dims["per_channel"] = Choice([False, True], default=True, when={"engine": channel, "bit_width": 8})
    groups: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for engine, c in caps.items():
        for option in c["options"]:
            if any(b in bit_widths for b in option["bit_widths"]):
                groups.setdefault(option["name"], []).append((engine, option))
    for name, group in groups.items():
        values = list(dict.fromkeys(v for _, o in group for v in o["values"]))
        when: dict[str, Any] = {"engine": [e for e, _ in group]}
        widths = sorted({b for _, o in group for b in o["bit_widths"] if b in bit_widths})
        if set(widths) != set(bit_widths):
            when["bit_width"] = widths
        for _, option in group[:1]:
            when.update({k: v for k, v in option["when"].items() if k in dims})
        dims[name] = Choice(values, default=group[0][1]["default"], when=when)
        rules += [{"engine": e, name: v} for e, o in group for v in values if v not in o["values"]]
    return rules
