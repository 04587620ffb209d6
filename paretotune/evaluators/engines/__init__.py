"""The engine registry: one line per engine, in the order the standard space offers them.

    from paretotune.evaluators import engines
    engines.get("openvino").capabilities.bit_widths      # (4, 8, 16, 32)

A new engine is one module with an `Engine` subclass (see `base.py` and docs/architecture.md)
and one line here. An unknown name is an error that lists the registered ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from paretotune.errors import ConfigError
from paretotune.evaluators.engines.base import (
    BuildSource,
    Built,
    Capabilities,
    Engine,
    ExportedArtifact,
    Option,
    Predictor,
    Runner,
    TritonLayout,
)
from paretotune.evaluators.engines.onnxruntime import OnnxRuntimeEngine
from paretotune.evaluators.engines.onnxruntime_cuda import OnnxRuntimeCudaEngine
from paretotune.evaluators.engines.onnxruntime_tensorrt import OnnxRuntimeTensorRTEngine
from paretotune.evaluators.engines.openvino import OpenVINOEngine
from paretotune.evaluators.engines.tensorrt import TensorRTEngine
from paretotune.evaluators.engines.torch import TorchEngine
from paretotune.evaluators.engines.torch_cuda import TorchCudaEngine

_REGISTRY: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    """Add `engine`; a second engine of the same name is refused, never overwritten."""
    if engine.name in _REGISTRY:
        raise ConfigError(f"engine {engine.name!r} is already registered")
    _REGISTRY[engine.name] = engine
    return engine


register(TorchEngine())
register(OnnxRuntimeEngine())
register(OpenVINOEngine())
register(TorchCudaEngine())
register(OnnxRuntimeCudaEngine())
register(OnnxRuntimeTensorRTEngine())
register(TensorRTEngine())


def get(name: Any) -> Engine:
    """The engine called `name`; ConfigError naming the registered ones otherwise."""
    engine = _REGISTRY.get(name) if isinstance(name, str) else None
    if engine is None:
        raise ConfigError(f"engine must be one of {names()}, got {name!r}")
    return engine


def names() -> list[str]:
    return list(_REGISTRY)


def registered() -> list[Engine]:
    return list(_REGISTRY.values())


def option_names() -> list[str]:
    """Every option key some engine declares (config keys, besides the common ones)."""
    return list(dict.fromkeys(o.name for e in registered() for o in e.capabilities.options))


def packages() -> list[str]:
    return list(dict.fromkeys(p for e in registered() for p in e.packages))


def space_capabilities(
    engines: Iterable[str] | None = None, *, transformer: bool = False
) -> dict[str, dict[str, Any]]:
    """The capabilities of `engines` (default: all) as plain data for `SearchSpace.standard`,
    which imports nothing of the evaluators: bit widths buildable on this machine, int8 modes,
    per_channel, and the options it may search (those with two or more values; transformer
    options only for a `transformer` task)."""
    out: dict[str, dict[str, Any]] = {}
    for name in names() if engines is None else engines:
        engine = get(name)
        caps = engine.capabilities
        options = [
            {
                "name": o.name,
                "values": list(o.allowed),
                "default": o.default,
                "bit_widths": [b for b in o.bit_widths if b in caps.bit_widths],
                "when": {k: list(v) for k, v in o.when.items()},
            }
            for o in caps.options
            if o.searched and len(o.allowed) > 1 and (transformer or not o.transformer)
        ]
        out[name] = {
            "on_gpu": engine.on_gpu,
            "bit_widths": [b for b in caps.bit_widths if engine.bit_width_problem(b) is None],
            "int8_modes": list(caps.int8_modes),
            "per_channel": caps.per_channel,
            "options": options,
        }
    return out


def resolve_options(engine: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every option of `engine` with its default filled in; ConfigError for an option it does
    not declare or a value outside the option's declared values."""
    caps = get(engine).capabilities
    given = dict(options or {})
    known = [o.name for o in caps.options]
    unknown = sorted((k for k in given if k not in known), key=str)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for engine {engine!r}; its options are {known}")
    resolved = {}
    for option in caps.options:
        value = given.get(option.name, option.default)
        if not option.accepts(value):
            raise ConfigError(
                f"option {option.name!r} of engine {engine!r} must be {option.describe()}, got {value!r}"
            )
        resolved[option.name] = value
    return resolved


__all__ = [
    "BuildSource",
    "Built",
    "Capabilities",
    "Engine",
    "ExportedArtifact",
    "Option",
    "Predictor",
    "Runner",
    "TritonLayout",
    "get",
    "names",
    "option_names",
    "packages",
    "register",
    "registered",
    "resolve_options",
    "space_capabilities",
]
