"""Reading a configuration: defaults, checks, and which combinations an engine can build.

What an engine can build is its declared `Capabilities` (`evaluators.engines`); this module
reads them for every engine alike, and leaves the rules that are not data to `Engine.check`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.evaluators import engines
from paretotune.evaluators.engines.base import looks_like_transformer
from paretotune.evaluators.serving.batcher import BatcherConfig

BIT_WIDTHS = (4, 8, 16, 32)
QUANT_MODES = ("dynamic", "static")
#: every precision a layer may be given on some engine (per engine: `layer_precisions`)
LAYER_PRECISIONS = ("int8", "int4", "fp16", "bf16", "fp32")
MAX_PRUNE_RATIO = 0.9

#: The keys every configuration may hold, with their defaults. Engine options (each engine's
#: `capabilities.options`) are keys too, see `known_keys`. Keys starting with "x_" are the user's.
COMMON_DEFAULTS: dict[str, Any] = {
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
    # the dynamic batcher, read under a server or offline scenario (evaluators.serving): they
    # decide how the built engine is served, never the build, so they are not in its cache key
    "max_batch_size": 1,
    "preferred_batch_sizes": [],
    "max_queue_delay_us": 0,
    "instances": 1,
}
BATCHER_KEYS = ("max_batch_size", "preferred_batch_sizes", "max_queue_delay_us", "instances")
USER_KEY_PREFIX = "x_"


def option_default(key: str, engine: str | None = None) -> Any:
    """The default of engine option `key` on `engine` (or on the first engine declaring it)."""
    declaring = [e for e in engines.registered() if e.capabilities.option(key) is not None]
    for candidate in sorted(declaring, key=lambda e: e.name != engine):
        option = candidate.capabilities.option(key)
        if option is not None:
            return option.default
    raise ConfigError(f"unknown engine option {key!r}; options: {engines.option_names()}")


#: Every key a configuration may hold, with its default (an option's: its first engine's).
DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    **{key: option_default(key) for key in engines.option_names()},
}


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
    #: the engine's build options that apply (sorted (key, value) pairs): in the artifact
    options: tuple[tuple[str, Any], ...] = ()
    #: the engine's runtime options that apply (session / compile options): not in the build
    runtime_options: tuple[tuple[str, Any], ...] = ()
    #: engines honouring every layer's precision (`layer_types`): (layer, precision), sorted
    layer_precisions: tuple[tuple[str, str], ...] = ()
    #: the dynamic batcher's settings (serving scenarios only); not part of the build
    batcher: BatcherConfig = BatcherConfig()

    @property
    def quantized(self) -> bool:
        return self.bit_width in (4, 8)

    @property
    def on_gpu(self) -> bool:
        return engines.get(self.engine).on_gpu

    def option(self, key: str) -> Any:
        """An engine option's value (its default when it does not apply to this engine)."""
        given = dict(self.options + self.runtime_options)
        return given[key] if key in given else option_default(key, self.engine)

    def build_dict(self) -> dict[str, Any]:
        """What decides the artifact (its cache key): no batch size, threads, batcher or
        runtime option; build options only where they differ from the engine's default, so a
        spec's key does not change when an engine declares a new option."""
        out = asdict(self)
        for key in ("batch_size", "threads", "ignored", "batcher", "runtime_options"):
            del out[key]
        out["excluded_layers"] = list(self.excluded_layers)
        out["options"] = [
            [key, value] for key, value in self.options if value != option_default(key, self.engine)
        ]
        out["layer_precisions"] = [list(pair) for pair in self.layer_precisions]
        for key in ("options", "layer_precisions"):
            if not out[key]:
                del out[key]
        if getattr(engines.get(self.engine), "build_keys_batch_size", False):
            out["profile_batch_size"] = self.batch_size  # a profile is built for the batch size
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


def known_keys() -> list[str]:
    return [*COMMON_DEFAULTS, *engines.option_names()]


def check_space_keys(names: Sequence[str]) -> None:
    """Refuse, at `create_study`, a space dimension a `pt.Task` evaluator does not know:
    otherwise every trial would fail on it (``x_``-prefixed keys are the user's own)."""
    known = known_keys()
    unknown = [n for n in names if n not in known and not n.startswith(USER_KEY_PREFIX)]
    if unknown:
        raise ConfigError(
            f"space: unknown dimension(s) {unknown} for a pt.Task evaluator; known keys are "
            f"{sorted(known)} (keys starting with {USER_KEY_PREFIX!r} are left to the user)"
        )


def resolve_config(config: Mapping[str, Any], layers: Mapping[str, str]) -> BuildSpec:
    """Check `config` against the known keys, the engine's capabilities and `layers`, and fill
    in defaults.

    Raises ConfigError for a malformed value or an unknown key (or engine), and
    InvalidConfigError for a well-formed combination the engine cannot build (int4 on torch,
    bf16 on onnxruntime...).
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    known = known_keys()
    for key in config:
        if not isinstance(key, str) or (key not in known and not key.startswith(USER_KEY_PREFIX)):
            raise ConfigError(
                f"unknown config key {key!r}; known keys are {sorted(known)} "
                f"(keys starting with {USER_KEY_PREFIX!r} are left to the user)"
            )
    engine = engines.get(config.get("engine", COMMON_DEFAULTS["engine"]))
    caps = engine.capabilities
    bit_width = _choice(config, "bit_width", BIT_WIDTHS)
    if bit_width not in caps.bit_widths:
        raise InvalidConfigError(
            f"bit_width={bit_width} is not buildable on engine={engine.name!r}; allowed bit "
            f"widths there are {sorted(caps.bit_widths)}"
        )
    problem = engine.bit_width_problem(bit_width)
    if problem is not None:
        raise InvalidConfigError(problem)
    ignored: list[str] = []
    excluded, per_layer = _precision(config, layers, engine.name, bit_width, ignored)
    quant_mode = _choice(config, "quant_mode", QUANT_MODES)
    per_channel = _flag(config, "per_channel")
    if bit_width != 8:
        ignored += [k for k in ("quant_mode", "per_channel") if k in config]
    else:
        if not caps.int8_modes:
            ignored += ["quant_mode"] if "quant_mode" in config else []
        elif "quant_mode" not in config:
            quant_mode = caps.int8_modes[0]
        elif quant_mode not in caps.int8_modes:
            raise InvalidConfigError(
                f"quant_mode={quant_mode!r} is not buildable on engine={engine.name!r}; allowed "
                f"there: {list(caps.int8_modes)}"
            )
        if not caps.per_channel:
            ignored += ["per_channel"] if "per_channel" in config else []
    torch_compile = _flag(config, "torch_compile")
    if torch_compile and not caps.torch_compile:
        ignored.append("torch_compile")
    build, runtime = _options(config, engine.name, bit_width, layers, ignored)
    spec = BuildSpec(
        prune_ratio=_number(config, "prune_ratio", 0.0, MAX_PRUNE_RATIO),
        sparsity=_number(config, "sparsity", 0.0, MAX_PRUNE_RATIO),
        engine=engine.name,
        bit_width=bit_width,
        quant_mode=quant_mode if bit_width == 8 and caps.int8_modes else None,
        per_channel=per_channel if bit_width == 8 and caps.per_channel else False,
        excluded_layers=tuple(sorted(excluded)),
        torch_compile=torch_compile and caps.torch_compile,
        batch_size=_positive_int(config, "batch_size"),
        threads=_positive_int(config, "threads"),
        options=build,
        runtime_options=runtime,
        layer_precisions=tuple(sorted(per_layer.items())),
        batcher=_batcher(config),
    )
    spec = engine.check(spec, config, layers, ignored)
    return replace(spec, ignored=tuple(ignored))


def _precision(
    config: Mapping[str, Any], layers: Mapping[str, str], engine: str, bit_width: int, ignored: list[str]
) -> tuple[list[str], dict[str, str]]:
    """(layers kept in fp32, every layer's precision where the engine honours them all)."""
    precision = config.get("precision", COMMON_DEFAULTS["precision"])
    if precision is None:
        precision = {}
    if not isinstance(precision, Mapping):
        raise ConfigError(
            f"precision must be a mapping of layer name to precision, got {precision!r}"
        )
    for layer, value in precision.items():
        if layer not in layers:
            raise ConfigError(
                f"precision names unknown layer {layer!r}; the model's layers are {list(layers)}"
            )
        if value not in LAYER_PRECISIONS:
            raise ConfigError(
                f"precision[{layer!r}] must be one of {list(LAYER_PRECISIONS)}, got {value!r}"
            )
    caps = engines.get(engine).capabilities
    allowed = caps.layer_precisions.get(bit_width, ())
    if not allowed:
        if precision:
            ignored.append("precision")
        return [], {}
    refused: dict[str, list[str]] = {}
    for layer, value in precision.items():
        if value not in allowed:
            refused.setdefault(value, []).append(layer)
    for value, names in refused.items():
        elsewhere = sorted(b for b, ok in caps.layer_precisions.items() if value in ok)
        needs = f"needs bit_width={'/'.join(map(str, elsewhere))}" if elsewhere else "cannot be built per layer"
        raise InvalidConfigError(
            f"precision {names} = {value!r} on engine={engine!r} {needs}, got bit_width="
            f"{bit_width}; allowed per layer at bit_width={bit_width}: {list(allowed)}"
        )
    # fp32 exclusions matter only when the rest is quantized
    excluded = [layer for layer, value in precision.items() if value == "fp32" and bit_width in (4, 8)]
    return excluded, dict(precision) if caps.layer_types else {}


def _options(
    config: Mapping[str, Any], engine: str, bit_width: int, layers: Mapping[str, str], ignored: list[str]
) -> tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]:
    """(build options, runtime options) of `engine` that apply; every option given is checked
    against what any engine declares (ConfigError), the engine's own against its values
    (InvalidConfigError), and one that does not apply here is noted as ignored."""
    for key in engines.option_names():
        if key in config:
            declared = [o for e in engines.registered() if (o := e.capabilities.option(key))]
            if not any(o.accepts(config[key]) for o in declared):
                allowed = sorted({d for o in declared for d in (o.describe(),)})
                raise ConfigError(f"{key} must be {' or '.join(allowed)}, got {config[key]!r}")
    caps = engines.get(engine).capabilities
    chosen: dict[str, Any] = {}
    for option in caps.options:
        value = config.get(option.name, option.default)
        applies = bit_width in option.bit_widths and (
            not option.transformer or looks_like_transformer(layers)
        )
        applies = applies and all(chosen.get(k, None) in v for k, v in option.when.items())
        if not applies:
            continue
        if not option.accepts(value):
            raise InvalidConfigError(
                f"{option.name}={value!r} is not buildable on engine={engine!r} at bit_width="
                f"{bit_width}; allowed there: {option.describe()}"
            )
        chosen[option.name] = value
    ignored += [k for k in engines.option_names() if k in config and k not in chosen]
    stage = {o.name: o.stage for o in caps.options}
    return (
        tuple(sorted((k, v) for k, v in chosen.items() if stage[k] == "build")),
        tuple(sorted((k, v) for k, v in chosen.items() if stage[k] == "runtime")),
    )


def _batcher(config: Mapping[str, Any]) -> BatcherConfig:
    """The batcher keys of `config` (each checked, with its name) as a BatcherConfig."""
    values = {k: config.get(k, DEFAULTS[k]) for k in BATCHER_KEYS}
    preferred = values["preferred_batch_sizes"]
    if preferred is None:
        preferred = []
    if isinstance(preferred, (str, bytes)) or not isinstance(preferred, (list, tuple)):
        raise ConfigError(f"preferred_batch_sizes must be a list of integers, got {preferred!r}")
    return BatcherConfig(
        max_batch_size=values["max_batch_size"],
        preferred_batch_sizes=tuple(preferred),
        max_queue_delay_us=values["max_queue_delay_us"],
        instances=values["instances"],
    )
