"""Reading a configuration: defaults, checks, and which combinations an engine can build."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from paretotune.errors import ConfigError, InvalidConfigError

ENGINES = ("torch", "onnxruntime")
BIT_WIDTHS = (4, 8, 16, 32)
QUANT_MODES = ("dynamic", "static")
LAYER_PRECISIONS = ("int8", "fp32")
MAX_PRUNE_RATIO = 0.9

#: Every key a configuration may hold, with its default. Keys starting with "x_" are the user's.
DEFAULTS: dict[str, Any] = {
    "prune_ratio": 0.0,
    "engine": "torch",
    "bit_width": 32,
    "quant_mode": "dynamic",
    "per_channel": False,
    "precision": {},
    "batch_size": 1,
    "threads": 1,
    "torch_compile": False,
    "sparsity": 0.0,
}
USER_KEY_PREFIX = "x_"


@dataclass(frozen=True)
class BuildSpec:
    """A configuration with defaults filled in, checked, and normalized.

    Everything except `batch_size` and `threads` decides the built artifact (`build_dict`).
    """

    prune_ratio: float
    sparsity: float
    engine: str
    bit_width: int
    quant_mode: str | None  # only for int8
    per_channel: bool
    excluded_layers: tuple[str, ...]  # layers kept in fp32 while the rest is quantized
    torch_compile: bool
    batch_size: int
    threads: int
    ignored: tuple[str, ...] = ()  # keys given that do not apply to this combination

    @property
    def quantized(self) -> bool:
        return self.bit_width in (4, 8)

    def build_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["batch_size"], out["threads"], out["ignored"]
        out["excluded_layers"] = list(self.excluded_layers)
        return out


def _number(config: Mapping[str, Any], key: str, low: float, high: float) -> float:
    value = config.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _positive_int(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be an int >= 1, got {value!r}")
    return value


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, DEFAULTS[key])
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def _choice(config: Mapping[str, Any], key: str, allowed: tuple[Any, ...]) -> Any:
    value = config.get(key, DEFAULTS[key])
    if isinstance(value, bool) or value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
    return value


def resolve_config(config: Mapping[str, Any], layers: Mapping[str, str]) -> BuildSpec:
    """Check `config` against the known keys and `layers`, and fill in defaults.

    Raises ConfigError for a malformed value or an unknown key, and InvalidConfigError for a
    well-formed combination the engine cannot build (int4 on torch, bf16 on onnxruntime...).
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    for key in config:
        if not isinstance(key, str) or (
            key not in DEFAULTS and not key.startswith(USER_KEY_PREFIX)
        ):
            raise ConfigError(
                f"unknown config key {key!r}; known keys are {sorted(DEFAULTS)} "
                f"(keys starting with {USER_KEY_PREFIX!r} are left to the user)"
            )
    engine = _choice(config, "engine", ENGINES)
    bit_width = _choice(config, "bit_width", BIT_WIDTHS)
    quant_mode = _choice(config, "quant_mode", QUANT_MODES)
    per_channel = _flag(config, "per_channel")
    precision = config.get("precision", DEFAULTS["precision"])
    if precision is None:
        precision = {}
    if not isinstance(precision, Mapping):
        raise ConfigError(
            f"precision must be a mapping of layer name to precision, got {precision!r}"
        )
    excluded = []
    for layer, value in precision.items():
        if layer not in layers:
            raise ConfigError(
                f"precision names unknown layer {layer!r}; the model's layers are {list(layers)}"
            )
        if value not in LAYER_PRECISIONS:
            if value in ("fp16", "bf16", "int4"):
                raise InvalidConfigError(
                    f"precision[{layer!r}]={value!r} cannot be built per layer on CPU engines; "
                    f"allowed per-layer precisions are {list(LAYER_PRECISIONS)}"
                )
            raise ConfigError(
                f"precision[{layer!r}] must be one of {list(LAYER_PRECISIONS)}, got {value!r}"
            )
        if value == "fp32":
            excluded.append(layer)

    ignored = [k for k in ("quant_mode", "per_channel") if k in config and bit_width != 8]
    if precision and bit_width not in (4, 8):
        ignored.append("precision")
    if config.get("torch_compile") and engine != "torch":
        ignored.append("torch_compile")
    spec = BuildSpec(
        prune_ratio=_number(config, "prune_ratio", 0.0, MAX_PRUNE_RATIO),
        sparsity=_number(config, "sparsity", 0.0, MAX_PRUNE_RATIO),
        engine=engine,
        bit_width=bit_width,
        quant_mode=quant_mode if bit_width == 8 else None,
        per_channel=per_channel if bit_width == 8 else False,
        excluded_layers=tuple(sorted(excluded)) if bit_width in (4, 8) else (),
        torch_compile=_flag(config, "torch_compile") and engine == "torch",
        batch_size=_positive_int(config, "batch_size"),
        threads=_positive_int(config, "threads"),
        ignored=tuple(ignored),
    )
    _check_buildable(spec)
    return spec


def _check_buildable(spec: BuildSpec) -> None:
    if spec.engine == "torch":
        if spec.bit_width == 4:
            raise InvalidConfigError(
                "bit_width=4 is not buildable on engine='torch'; int4 weight-only needs "
                "engine='onnxruntime' (MatMulNBits)"
            )
        if spec.bit_width == 8 and spec.quant_mode == "static":
            raise InvalidConfigError(
                "quant_mode='static' is not buildable on engine='torch'; torch int8 is dynamic "
                "only here, use engine='onnxruntime' for static QDQ"
            )
        if spec.bit_width == 16:
            from paretotune.evaluators.hardware import cpu_supports_bf16

            if not cpu_supports_bf16():
                raise InvalidConfigError(
                    "bit_width=16 (bf16) on engine='torch' needs a CPU with avx512_bf16 or "
                    "amx_bf16, and this CPU has neither"
                )
    else:
        if spec.bit_width == 16:
            raise InvalidConfigError(
                "bit_width=16 is not buildable on engine='onnxruntime' on CPU; allowed bit "
                "widths there are 4, 8 and 32"
            )
