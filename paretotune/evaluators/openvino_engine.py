"""The `openvino` engine (CPU): OpenVINO IR from the fp32 ONNX export, quantized with NNCF.

bit_width 32 runs the IR with INFERENCE_PRECISION_HINT f32, pinned, because OpenVINO's CPU plugin
otherwise runs bf16 on CPUs that have it. 16 runs the same IR with the hint set to bf16, which
OpenVINO silently ignores where the CPU lacks bf16, so `availability` refuses it there. 8 is NNCF
post-training quantization on the task's calibration batches. 4 is NNCF weight-only compression
(int4 with an int8 backup for the layers NNCF keeps at 8 bits). Per-layer fp32 becomes NNCF's
ignored scope.

Performance hint and streams are compile options and change no IR, so one artifact serves every
value of them. The artifact (a packed IR) and the graph queries are in `openvino_ir.py`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import ConfigError, EvaluationError, InvalidConfigError
from paretotune.evaluators.openvino_ir import (
    IR_FILES,
    MESSAGE_CHARS,
    core,
    is_transformer,
    load_model,
    make_dynamic,
    map_excluded_layers,
    pack_ir,
    serialize_model,
    unpack_ir,
)

if TYPE_CHECKING:
    import openvino as ov

    from paretotune.evaluators.task import Task

logger = logging.getLogger(__name__)

ENGINE = "openvino"
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
NUM_STREAMS = (1, 2, "AUTO")
WEIGHT_MODES = ("int4_sym", "int4_asym")
#: int4 group size: divides the K dimension of MiniLM (384, 1536) and of the digits CNN's fc1
INT4_GROUP_SIZE = 128


# -- capabilities, as data ------------------------------------------------------------------


@dataclass(frozen=True)
class EngineOption:
    """One option of the engine: its allowed values, its default, and where it applies.

    `stage` "compile" options go to `compile_model` only (the artifact does not depend on them,
    so they stay out of its cache key); "build" options change the IR.
    """

    name: str
    allowed: tuple[Any, ...]
    default: Any
    bit_widths: tuple[int, ...]
    stage: str
    doc: str


@dataclass(frozen=True)
class Capabilities:
    """What the engine can build: bit widths, options, and per-layer precision."""

    engine: str
    on_gpu: bool
    bit_widths: tuple[int, ...]
    precisions: Mapping[int, str]
    options: tuple[EngineOption, ...]
    #: per-layer precisions a config may ask for, and the bit widths where they apply
    layer_precisions: tuple[str, ...]
    layer_precision_bit_widths: tuple[int, ...]
    #: the least fidelity to the fp32 model (the task's cosine or top-1 agreement) each bit
    #: width keeps on the conformance suite's small CNN and transformer
    min_fidelity: Mapping[int, float] = field(default_factory=dict)
    #: limits a space should know of, in words
    notes: tuple[str, ...] = field(default=())

    def option(self, name: str) -> EngineOption:
        for option in self.options:
            if option.name == name:
                return option
        raise ConfigError(
            f"engine {self.engine!r} has no option {name!r}; its options are "
            f"{[o.name for o in self.options]}"
        )


CAPABILITIES = Capabilities(
    engine=ENGINE,
    on_gpu=False,
    bit_widths=(4, 8, 16, 32),
    precisions={
        32: "fp32 (INFERENCE_PRECISION_HINT f32)",
        16: "bf16 (INFERENCE_PRECISION_HINT bf16; CPUs with AMX-BF16 or avx512_bf16 only)",
        8: "int8: NNCF post-training quantization on the task's calibration batches",
        4: "weight-only int4 (NNCF compress_weights; int8 for the layers NNCF backs up)",
    },
    options=(
        EngineOption(
            "performance_hint", PERFORMANCE_HINTS, "LATENCY", (4, 8, 16, 32), "compile",
            "OpenVINO's PERFORMANCE_HINT: how it lays out streams and threads",
        ),
        EngineOption(
            "num_streams", NUM_STREAMS, 1, (4, 8, 16, 32), "compile",
            "NUM_STREAMS; one synchronous request uses one stream, so >1 splits the threads",
        ),
        EngineOption(
            "weight_mode", WEIGHT_MODES, "int4_sym", (4,), "build",
            "nncf.compress_weights mode at bit_width=4 (group size "
            f"{INT4_GROUP_SIZE})",
        ),
    ),
    layer_precisions=("int8", "fp32"),
    layer_precision_bit_widths=(4, 8),
    min_fidelity={32: 0.9999, 16: 0.99, 8: 0.98, 4: 0.90},
    notes=(
        "num_streams above the thread count is refused: OpenVINO would run fewer streams",
        "on a small CNN, bit_width=4 compresses only the inner Linear layers to int4: NNCF "
        "keeps convolutions and the last layer at int8",
    ),
)


def resolve_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every option with its default filled in. ConfigError for an unknown option or a value
    it does not declare, naming the option, the value and the allowed values."""
    given = dict(options or {})
    known = {o.name: o for o in CAPABILITIES.options}
    unknown = sorted(set(given) - set(known), key=str)
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for engine {ENGINE!r}; its options are {list(known)}"
        )
    resolved = {}
    for name, option in known.items():
        value = given.get(name, option.default)
        # bool is an int: True must not pass for num_streams=1
        if isinstance(value, bool) or not any(
            value == a and type(value) is type(a) for a in option.allowed
        ):
            raise ConfigError(
                f"option {name!r} of engine {ENGINE!r} must be one of {list(option.allowed)}, "
                f"got {value!r}"
            )
        resolved[name] = value
    return resolved


def build_options(options: Mapping[str, Any] | None, bit_width: int) -> dict[str, Any]:
    """The options that change the artifact at `bit_width` (for its cache key)."""
    resolved = resolve_options(options)
    return {
        o.name: resolved[o.name]
        for o in CAPABILITIES.options
        if o.stage == "build" and bit_width in o.bit_widths
    }


def _check_bit_width(bit_width: int) -> None:
    if isinstance(bit_width, bool) or bit_width not in CAPABILITIES.bit_widths:
        raise InvalidConfigError(
            f"bit_width={bit_width!r} is not buildable on engine={ENGINE!r}; allowed: "
            f"{list(CAPABILITIES.bit_widths)}"
        )


# -- availability ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> list[str]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of the CPU ('FP32', 'INT8', 'BF16', ...)."""
    return [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def availability(bit_width: int | None = None) -> str | None:
    """None when the engine can run here (at `bit_width`, when given), else the reason."""
    from paretotune.evaluators.availability import importable

    if not importable("openvino"):
        return "openvino not importable (install paretotune[cpu])"
    if bit_width in (4, 8) and not importable("nncf"):
        return f"nncf not importable (bit_width={bit_width} on engine 'openvino' needs it)"
    if bit_width == 16:
        try:
            caps = cpu_capabilities()
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
            return f"OpenVINO cannot read the CPU's OPTIMIZATION_CAPABILITIES: {exc}"
        if "BF16" not in caps:
            return (
                "bit_width=16 (bf16) on engine 'openvino' needs a CPU with AMX-BF16 or "
                f"avx512_bf16; OpenVINO's CPU OPTIMIZATION_CAPABILITIES here are {caps}, "
                "without 'BF16' (OpenVINO would silently run f32)"
            )
    return None



@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs INFO tables and draws rich progress bars on stdout: keep both out of the
    worker's output (the bars go to the debug log)."""
    import nncf

    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf.set_log_level(logging.ERROR)
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
            warnings.simplefilter("ignore")
            yield
    finally:
        nncf.set_log_level(level)
        if captured.getvalue().strip():
            logger.debug("NNCF output: %s", captured.getvalue()[-2000:])


# -- build ----------------------------------------------------------------------------------


def build_openvino(
    onnx_bytes: bytes,
    bit_width: int,
    options: Mapping[str, Any] | None,
    task: Task,
    layers: Sequence[str],
    excluded_layers: Sequence[str] = (),
    *,
    transformer: bool | None = None,
) -> bytes:
    """The packed IR for `bit_width` from the fp32 ONNX export (`task.onnx_bytes()` or
    `onnx_graph.export_onnx`).

    layers: the task's quantizable layers (`task.layers`), for the name mapping;
    excluded_layers: the layers kept in fp32 at bit widths 8 and 4 (NNCF's ignored scope);
    transformer: NNCF's TRANSFORMER model type; None detects attention in the graph.
    InvalidConfigError for a combination this engine or CPU cannot build, ConfigError for a bad
    option, EvaluationError when OpenVINO or NNCF fail.
    """
    _check_bit_width(bit_width)
    resolved = resolve_options(options)
    reason = availability(bit_width)
    if reason is not None:
        raise InvalidConfigError(reason)
    excluded = sorted(set(excluded_layers))
    if excluded and bit_width not in CAPABILITIES.layer_precision_bit_widths:
        raise InvalidConfigError(
            f"per-layer fp32 {excluded} on engine {ENGINE!r} applies at bit widths "
            f"{list(CAPABILITIES.layer_precision_bit_widths)}, got bit_width={bit_width}"
        )
    try:
        model = core().read_model(onnx_bytes)
    except Exception as exc:  # noqa: BLE001
        raise EvaluationError(
            f"OpenVINO cannot read the ONNX model: {str(exc)[:MESSAGE_CHARS]}"
        ) from exc
    make_dynamic(model, task.dynamic_axes)
    if bit_width in (4, 8):
        ignored = _ignored_names(onnx_bytes, model, layers, excluded)
        model = _compress(model, bit_width, resolved, task, ignored, transformer)
    return serialize_model(model)


def _ignored_names(
    onnx_bytes: bytes, model: ov.Model, layers: Sequence[str], excluded: Sequence[str]
) -> list[str]:
    if not excluded:
        return []
    mapping = map_excluded_layers(onnx_bytes, model, layers, excluded)
    unmapped = [layer for layer, ops in mapping.items() if not ops]
    if unmapped:
        raise InvalidConfigError(
            f"precision fp32 for layers {unmapped} cannot be honoured on engine {ENGINE!r}: "
            "no OpenVINO MatMul/Convolution carries their weights; layers with weight ops: "
            f"{sorted(layer for layer, ops in mapping.items() if ops)}"
        )
    return sorted({name for ops in mapping.values() for name in ops})


def _compress(
    model: ov.Model,
    bit_width: int,
    options: Mapping[str, Any],
    task: Task,
    ignored: Sequence[str],
    transformer: bool | None,
) -> ov.Model:
    import nncf

    scope = nncf.IgnoredScope(names=list(ignored)) if ignored else None
    try:
        with _quiet_nncf():
            if bit_width == 4:
                mode = getattr(nncf.CompressWeightsMode, str(options["weight_mode"]).upper())
                return nncf.compress_weights(
                    model, mode=mode, group_size=INT4_GROUP_SIZE, ignored_scope=scope,
                    # a layer whose input width 128 does not divide gets the largest group
                    # size that does (a small transformer's 64-wide layers) instead of failing
                    advanced_parameters=nncf.AdvancedCompressionParameters(
                        group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST
                    ),
                )
            if not task.calibration:
                raise InvalidConfigError(
                    f"bit_width=8 on engine {ENGINE!r} calibrates on the task's calibration "
                    f"batches, and task {task.name!r} has none"
                )
            names = [port.get_any_name() for port in model.inputs]
            dataset = nncf.Dataset(list(task.calibration), _feeder(names))
            if transformer is None:
                transformer = is_transformer(model)
            kwargs: dict[str, Any] = {"subset_size": len(task.calibration)}
            if transformer:
                kwargs["model_type"] = nncf.ModelType.TRANSFORMER
            if scope is not None:
                kwargs["ignored_scope"] = scope
            return nncf.quantize(model, dataset, **kwargs)
    except (InvalidConfigError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - NNCF raises many types
        raise EvaluationError(
            f"NNCF {'compress_weights' if bit_width == 4 else 'quantize'} "
            f"(bit_width={bit_width}) failed: {type(exc).__name__}: {str(exc)[:MESSAGE_CHARS]}"
        ) from exc


def _feeder(names: Sequence[str]) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    def transform(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in names if n not in batch]
        if missing:
            raise EvaluationError(
                f"the OpenVINO model needs inputs {missing}; the calibration batch gives "
                f"{list(batch)}"
            )
        return {n: np.ascontiguousarray(batch[n]) for n in names}

    return transform


# -- run ------------------------------------------------------------------------------------


def compile_properties(threads: int, bit_width: int, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The CPU plugin properties a trial compiles with (and the Triton parameters mirror)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an int >= 1, got {threads!r}")
    _check_bit_width(bit_width)
    resolved = resolve_options(options)
    streams = resolved["num_streams"]
    if isinstance(streams, int) and streams > threads:
        raise InvalidConfigError(
            f"option 'num_streams'={streams} of engine {ENGINE!r} needs threads >= {streams}, "
            f"got threads={threads} (OpenVINO would run {threads} stream(s)); allowed at "
            f"threads={threads}: {[s for s in NUM_STREAMS if not isinstance(s, int) or s <= threads]}"
        )
    return {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": resolved["performance_hint"],
        "NUM_STREAMS": streams,
        "INFERENCE_PRECISION_HINT": "bf16" if bit_width == 16 else "f32",
    }


class OpenVINORunner:
    """A compiled OpenVINO model on the CPU with a fixed thread count, hint and streams.

    `prepare` sets the inputs on an infer request once, so the timed call is `infer()` alone
    (OpenVINO releases the GIL while it runs). `properties` holds what the plugin actually
    compiled with, for the measurement's details.
    """

    engine = ENGINE

    def __init__(
        self, artifact: bytes, threads: int, bit_width: int, options: Mapping[str, Any] | None
    ):
        config = compile_properties(threads, bit_width, options)
        reason = availability(bit_width)
        if reason is not None:
            raise InvalidConfigError(reason)
        model = load_model(artifact)
        try:
            self.compiled = core().compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise EvaluationError(
                f"OpenVINO could not compile the model with {config}: {str(exc)[:MESSAGE_CHARS]}"
            ) from exc
        self.properties = {
            key: _plain(self.compiled.get_property(key))
            for key in (*config, "OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        }
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self._dtypes = {
            port.get_any_name(): port.get_element_type().to_dtype()
            for port in self.compiled.inputs
        }

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        import openvino as ov

        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise EvaluationError(
                f"the OpenVINO model needs inputs {missing}; the task gives {list(inputs)}"
            )
        request = self.compiled.create_infer_request()
        # own copies: the request reads them in place, and a caller's array may be read-only
        arrays = {n: np.array(inputs[n], dtype=self._dtypes[n], order="C") for n in self.input_names}
        for name, array in arrays.items():
            request.set_tensor(name, ov.Tensor(array, shared_memory=True))

        def run() -> Any:
            arrays  # noqa: B018 - the request reads these buffers: keep them alive
            return request.infer(share_outputs=True)

        return run

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        outputs = self.prepare(inputs)()
        return np.array(outputs[0], dtype=np.float32, copy=True)

    def run_all(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every output, in the compiled model's order, copied out of the request."""
        outputs = self.prepare(inputs)()
        return [np.array(outputs[i], copy=True) for i in range(len(self.compiled.outputs))]


def _plain(value: Any) -> str:
    """A property as text: 'f32' rather than "<Type: 'float32'>"."""
    name = getattr(value, "get_type_name", None)
    return str(name()) if callable(name) else str(value)


# -- export ---------------------------------------------------------------------------------


def write_ir(artifact: bytes, directory: str | Path) -> list[Path]:
    """Write model.xml and model.bin into `directory` (created); returns their paths."""
    xml, weights = unpack_ir(artifact)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    paths = [target / IR_FILES[0], target / IR_FILES[1]]
    paths[0].write_bytes(xml)
    paths[1].write_bytes(weights)
    return paths


def read_ir(directory: str | Path) -> bytes:
    """The packed artifact of a directory `write_ir` wrote (for `load_exported`)."""
    target = Path(directory)
    try:
        return pack_ir((target / IR_FILES[0]).read_bytes(), (target / IR_FILES[1]).read_bytes())
    except OSError as exc:
        raise EvaluationError(f"cannot read the OpenVINO IR in {str(target)!r}: {exc}") from exc


@dataclass(frozen=True)
class TritonLayout:
    """How Triton's `openvino` backend serves the artifact: files in the version directory,
    backend (no platform), and the `parameters` of config.pbtxt (string values).

    `precision_pinned` is False when the served precision may differ from the measured one:
    the backend can ask for bf16 (HINT_BF16) but has no parameter for f32, so on a CPU with
    bf16 OpenVINO's default (bf16) applies to an fp32, int8 or int4 artifact.
    """

    files: tuple[str, ...]
    default_model_filename: str
    backend: str
    platform: str | None
    kind: str
    parameters: dict[str, str]
    precision_pinned: bool


def triton_layout(threads: int, bit_width: int, options: Mapping[str, Any] | None) -> TritonLayout:
    """The Triton layout for a trial: the parameters mirror `compile_properties`.

    Parameter names are those the triton-inference-server/openvino_backend reads:
    INFERENCE_NUM_THREADS, NUM_STREAMS (a number or AUTO), PERFORMANCE_HINT, HINT_BF16 (YES).
    """
    props = compile_properties(threads, bit_width, options)
    parameters = {
        "INFERENCE_NUM_THREADS": str(props["INFERENCE_NUM_THREADS"]),
        "NUM_STREAMS": str(props["NUM_STREAMS"]),
        "PERFORMANCE_HINT": str(props["PERFORMANCE_HINT"]),
    }
    if bit_width == 16:
        parameters["HINT_BF16"] = "YES"
    return TritonLayout(
        files=IR_FILES,
        default_model_filename=IR_FILES[0],
        backend="openvino",
        platform=None,
        kind="KIND_CPU",
        parameters=parameters,
        precision_pinned=bit_width == 16,
    )


def triton_parameters_text(parameters: Mapping[str, str]) -> str:
    """The `parameters` entries of a config.pbtxt, in protobuf text format."""
    import json

    return "".join(
        "parameters {\n"
        f"  key: {json.dumps(key)}\n"
        f"  value: {{ string_value: {json.dumps(value)} }}\n"
        "}\n"
        for key, value in parameters.items()
    )


def versions() -> dict[str, str | None]:
    """openvino's and nncf's versions, for the build cache key and the hardware record."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for package in ("openvino", "nncf"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out
