"""Reading a configuration: defaults, checks, and which combinations an engine can build."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.evaluators.availability import ENGINES, GPU_ENGINES
from paretotune.evaluators.serving.batcher import BatcherConfig

BIT_WIDTHS = (4, 8, 16, 32)
QUANT_MODES = ("dynamic", "static")
LAYER_PRECISIONS = ("int8", "fp32")
#: per-layer precisions TensorRT can obey (layer.precision + output types)
TRT_LAYER_PRECISIONS = ("int8", "fp16", "bf16", "fp32")
HALF_TYPES = ("fp16", "bf16")
#: where TensorRT's int8 scales come from: IInt8EntropyCalibrator2 over the task's calibration
#: batches, or the explicit Q/DQ nodes of the ONNX Runtime static-int8 model
INT8_SOURCES = ("calibration", "qdq")
CUDNN_CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
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
    # GPU engine options (see GPU_OPTIONS for which engine reads which)
    "half": "fp16",
    "cuda_graphs": False,
    "workspace_mb": 0,
    "int8_source": "calibration",
    "cudnn_conv_algo_search": "EXHAUSTIVE",
    # the dynamic batcher, read under a server or offline scenario (evaluators.serving): they
    # decide how the built engine is served, never the build, so they are not in its cache key
    "max_batch_size": 1,
    "preferred_batch_sizes": [],
    "max_queue_delay_us": 0,
    "instances": 1,
}
BATCHER_KEYS = ("max_batch_size", "preferred_batch_sizes", "max_queue_delay_us", "instances")
#: GPU engine -> the engine options it reads. `half` only counts at bit_width=16 and
#: `int8_source` only at bit_width=8; `workspace_mb=0` leaves TensorRT's own limit.
GPU_OPTIONS: dict[str, tuple[str, ...]] = {
    "torch_cuda": ("half", "cuda_graphs"),
    "onnxruntime_cuda": ("cuda_graphs", "cudnn_conv_algo_search"),
    "onnxruntime_tensorrt": ("half", "cuda_graphs", "workspace_mb", "cudnn_conv_algo_search"),
    "tensorrt": ("half", "workspace_mb", "int8_source"),
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
    #: GPU engines only: the engine options that apply (sorted (key, value) pairs)
    options: tuple[tuple[str, Any], ...] = ()
    #: engine 'tensorrt' only: per-layer precision (layer, int8|fp16|bf16|fp32), sorted
    layer_precisions: tuple[tuple[str, str], ...] = ()
    #: the dynamic batcher's settings (serving scenarios only); not part of the build
    batcher: BatcherConfig = BatcherConfig()

    @property
    def quantized(self) -> bool:
        return self.bit_width in (4, 8)

    @property
    def on_gpu(self) -> bool:
        return self.engine in GPU_ENGINES

    def option(self, key: str) -> Any:
        """An engine option's value (its default when it does not apply to this engine)."""
        return dict(self.options).get(key, DEFAULTS[key])

    def build_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["batch_size"], out["threads"], out["ignored"], out["batcher"]
        out["excluded_layers"] = list(self.excluded_layers)
        # CPU specs keep their old shape, so their cache keys do not change
        for key in ("options", "layer_precisions"):
            if out[key]:
                out[key] = [list(pair) for pair in out[key]]
            else:
                del out[key]
        if self.engine == "tensorrt":  # the optimization profile is built for the batch size
            out["profile_batch_size"] = self.batch_size
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
    per_layer: dict[str, str] = {}
    for layer, value in precision.items():
        if layer not in layers:
            raise ConfigError(
                f"precision names unknown layer {layer!r}; the model's layers are {list(layers)}"
            )
        if engine == "tensorrt":
            if value not in TRT_LAYER_PRECISIONS:
                raise ConfigError(
                    f"precision[{layer!r}] must be one of {list(TRT_LAYER_PRECISIONS)} on "
                    f"engine='tensorrt', got {value!r}"
                )
            per_layer[layer] = value
            if value == "fp32":
                excluded.append(layer)
            continue
        if value not in LAYER_PRECISIONS:
            if value in ("fp16", "bf16", "int4"):
                raise InvalidConfigError(
                    f"precision[{layer!r}]={value!r} cannot be built per layer on "
                    f"engine={engine!r}; allowed per-layer precisions there are "
                    f"{list(LAYER_PRECISIONS)} ({list(TRT_LAYER_PRECISIONS)} on engine='tensorrt')"
                )
            raise ConfigError(
                f"precision[{layer!r}] must be one of {list(LAYER_PRECISIONS)}, got {value!r}"
            )
        if value == "fp32":
            excluded.append(layer)

    ignored = [k for k in ("quant_mode", "per_channel") if k in config and bit_width != 8]
    if engine == "onnxruntime_tensorrt" and bit_width == 8 and "quant_mode" not in config:
        quant_mode = "static"  # its int8 is the Q/DQ model: static is the only mode
    trt_int8_source = config.get("int8_source", DEFAULTS["int8_source"])
    if engine == "tensorrt" and bit_width == 8:  # int8_source decides, not quant_mode
        ignored += ["quant_mode"] if "quant_mode" in config else []
        if "per_channel" in config and trt_int8_source != "qdq":
            ignored.append("per_channel")
        quant_mode = "static" if trt_int8_source == "qdq" else None
        per_channel = per_channel and trt_int8_source == "qdq"
    if engine == "tensorrt" and bit_width != 8 and "int8" in per_layer.values():
        int8_layers = [layer for layer, value in per_layer.items() if value == "int8"]
        raise InvalidConfigError(
            f"precision {int8_layers} = 'int8' on engine='tensorrt' needs bit_width=8 (the int8 scales come "
            f"from int8_source), got bit_width={bit_width}; allowed per layer at bit_width="
            f"{bit_width}: 'fp16', 'bf16', 'fp32'"
        )
    if precision and bit_width not in (4, 8) and engine != "tensorrt":
        ignored.append("precision")
    if config.get("torch_compile") and engine not in ("torch", "torch_cuda"):
        ignored.append("torch_compile")
    options = _gpu_options(config, engine, bit_width, ignored)
    spec = BuildSpec(
        prune_ratio=_number(config, "prune_ratio", 0.0, MAX_PRUNE_RATIO),
        sparsity=_number(config, "sparsity", 0.0, MAX_PRUNE_RATIO),
        engine=engine,
        bit_width=bit_width,
        quant_mode=quant_mode if bit_width == 8 else None,
        per_channel=per_channel if bit_width == 8 else False,
        excluded_layers=tuple(sorted(excluded)) if bit_width in (4, 8) else (),
        torch_compile=_flag(config, "torch_compile") and engine in ("torch", "torch_cuda"),
        batch_size=_positive_int(config, "batch_size"),
        threads=_positive_int(config, "threads"),
        ignored=tuple(ignored),
        options=options,
        layer_precisions=tuple(sorted(per_layer.items())),
        batcher=_batcher(config),
    )
    _check_buildable(spec)
    if spec.on_gpu:
        _check_gpu_buildable(spec)
    elif engine == "torch" and bit_width == 16 and config.get("half", "bf16") != "bf16":
        raise InvalidConfigError(
            f"half={config.get('half')!r} is not buildable on engine='torch' (CPU), whose 16-bit "
            "type is bf16; allowed there: 'bf16' (fp16 runs on engine='torch_cuda')"
        )
    return spec


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


def _gpu_options(
    config: Mapping[str, Any], engine: str, bit_width: int, ignored: list[str]
) -> tuple[tuple[str, Any], ...]:
    """Check every GPU option given, keep the ones `engine` reads; note the rest as ignored."""
    values: dict[str, Any] = {
        "half": _choice(config, "half", HALF_TYPES),
        "cuda_graphs": _flag(config, "cuda_graphs"),
        "workspace_mb": _non_negative_int(config, "workspace_mb"),
        "int8_source": _choice(config, "int8_source", INT8_SOURCES),
        "cudnn_conv_algo_search": _choice(
            config, "cudnn_conv_algo_search", CUDNN_CONV_ALGO_SEARCH
        ),
    }
    reads = list(GPU_OPTIONS.get(engine, ()))
    if bit_width != 16 and "half" in reads:
        reads.remove("half")
    if bit_width != 8 and "int8_source" in reads:
        reads.remove("int8_source")
    applies = set(reads) | ({"half"} if engine == "torch" and bit_width == 16 else set())
    for key in values:
        if key in config and key not in applies:
            ignored.append(key)
    return tuple(sorted((key, values[key]) for key in reads))


def _non_negative_int(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key} must be an int >= 0, got {value!r}")
    return value


def _check_gpu_buildable(spec: BuildSpec) -> None:
    """The GPU engines' capability matrix (space/standard.py forbids the same pairs)."""
    engine, bits = spec.engine, spec.bit_width
    if engine == "torch_cuda" and bits in (4, 8):
        raise InvalidConfigError(
            f"bit_width={bits} is not buildable on engine='torch_cuda' (PyTorch's int8 here is "
            "CPU-only); allowed bit widths there are 16 and 32, int8 on a GPU is "
            "engine='tensorrt' or 'onnxruntime_tensorrt'"
        )
    if engine == "onnxruntime_cuda" and bits == 16:
        raise InvalidConfigError(
            "bit_width=16 is not buildable on engine='onnxruntime_cuda' (no fp16 conversion of "
            "the ONNX model here); allowed bit widths there are 4, 8 and 32, and fp16 runs on "
            "engine='onnxruntime_tensorrt', 'tensorrt' or 'torch_cuda'"
        )
    if engine in ("tensorrt", "onnxruntime_tensorrt") and bits == 4:
        raise InvalidConfigError(
            f"bit_width=4 is not buildable on engine={engine!r}; allowed bit widths there are "
            "8, 16 and 32"
        )
    if engine == "onnxruntime_tensorrt":
        if bits == 16 and spec.option("half") != "fp16":
            raise InvalidConfigError(
                "half='bf16' is not buildable on engine='onnxruntime_tensorrt' (its provider "
                "options enable fp16 only); allowed: 'fp16', or bf16 on engine='tensorrt'"
            )
        if bits == 8 and spec.quant_mode != "static":
            raise InvalidConfigError(
                "quant_mode='dynamic' is not buildable on engine='onnxruntime_tensorrt'; its "
                "int8 is the static Q/DQ model, allowed: quant_mode='static'"
            )


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
    elif spec.engine == "onnxruntime":
        if spec.bit_width == 16:
            raise InvalidConfigError(
                "bit_width=16 is not buildable on engine='onnxruntime' on CPU; allowed bit "
                "widths there are 4, 8 and 32"
            )
