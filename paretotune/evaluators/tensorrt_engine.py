"""The `tensorrt` engine: ONNX -> TensorRT engine through the builder API, run through pycuda.

Two typing modes, chosen by the installed TensorRT's major version (`strongly_typed`):

- TensorRT 10 (weak typing): FP16/BF16 (`half`) and INT8 are builder flags; INT8 comes from
  IInt8EntropyCalibrator2 over the task's calibration batches or from the explicit Q/DQ nodes of
  ONNX Runtime's static-int8 model (`int8_source`). Per-layer precision sets `layer.precision`
  and the output types of the TensorRT layers made from each PyTorch layer's ONNX nodes, with
  OBEY_PRECISION_CONSTRAINTS; at bit_width 32 every other float layer is pinned to FLOAT, so a
  per-layer fp16 build is not fp16 everywhere (`apply_layer_precisions`).
- TensorRT 11 (strong typing, no precision flags, no calibrators): precision comes from the
  ONNX graph's types. Before parsing, fp16/bf16 Casts are put around the nodes that run in half
  (`cast_nodes_to_half`), keeping the engine's I/O in the model's types; INT8 and FP8 come only
  from Q/DQ nodes (`int8_source='qdq'`).

FP8 needs FP8 Q/DQ nodes in the ONNX model in both modes; each precision only where the GPU
supports it. One optimization profile: batch min 1, opt the trial's batch size, max the largest
batch the task feeds; other dynamic axes from 1 to the largest size in the task's data. Engines
are cached on disk by ONNX hash, build options, TensorRT version and GPU model. I/O: page-locked
host buffers and device buffers on one stream; CUDA events time the end-to-end batch (copies
included) and the compute alone, reported separately. The pycuda context pushed for this is
popped at exit (pycuda aborts the process when its context stack is not empty).

`tensorrt` and `pycuda` are imported only inside the functions that build or run an engine.
Per-layer precision and the precision checks live in `tensorrt_precision.py`, strong typing's
ONNX casts in `tensorrt_casts.py`; this module builds, caches and runs the engine.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import EvaluationError
from paretotune.evaluators.tensorrt_casts import (
    CastReport,
    cast_nodes_to_half,
    half_plan,
    has_fp8_qdq,
)
from paretotune.evaluators.tensorrt_precision import (
    PRECISION_FLAGS,
    STRONGLY_TYPED_MAJOR,
    apply_layer_precisions,
    check_gpu_supports,
    check_strongly_typed,
    layer_node_map,
    node_precisions,
    precisions_needed,
    strongly_typed,
    trt_major,
    type_name,
)

if TYPE_CHECKING:

    from paretotune.evaluators.cache import ArtifactCache
    from paretotune.evaluators.config import BuildSpec
    from paretotune.evaluators.task import Task

logger = logging.getLogger(__name__)

ENGINE_FORMAT = 1  # bump when the engine cache layout changes
NUMPY_TYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


def numpy_dtype(trt_dtype: Any) -> np.dtype[Any]:
    """The numpy dtype of a TensorRT I/O tensor type."""
    name = type_name(trt_dtype)
    if name not in NUMPY_TYPES:
        raise EvaluationError(
            f"a TensorRT engine input or output has type {name}, which numpy cannot hold; "
            f"supported I/O types: {sorted(NUMPY_TYPES)}"
        )
    return np.dtype(NUMPY_TYPES[name])


# -- the optimization profile --------------------------------------------------------------------


def profile_shapes(
    input_shapes: Mapping[str, Sequence[int]],
    batches: Sequence[Mapping[str, np.ndarray]],
    timing_batch: Mapping[str, np.ndarray],
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) for each network input whose shape has dynamic (-1) dims.

    opt is the timing batch (the trial's batch size); max covers every batch the task feeds
    (validation, calibration, example), so the accuracy pass runs on the same engine; min is 1.
    """
    out = {}
    for name, shape in input_shapes.items():
        if all(d >= 0 for d in shape):
            continue
        if name not in timing_batch:
            raise EvaluationError(
                f"TensorRT input {name!r} has dynamic dims {list(shape)}, and the task has no "
                f"input of that name; its inputs: {list(timing_batch)}"
            )
        opt = tuple(int(d) for d in timing_batch[name].shape)
        low, high = [], []
        for axis, dim in enumerate(shape):
            if dim >= 0:
                low.append(dim)
                high.append(dim)
                continue
            sizes = [int(b[name].shape[axis]) for b in batches if name in b] + [opt[axis]]
            low.append(1)
            high.append(max(sizes))
        out[name] = (tuple(low), opt, tuple(high))
    return out


# -- the engine cache ----------------------------------------------------------------------------


def engine_cache_key(
    onnx_bytes: bytes, build: Mapping[str, Any], trt_version: str, gpu: Mapping[str, Any]
) -> str:
    """Key of a serialized engine: ONNX content hash, build options, TensorRT version and the
    GPU model (name and compute capability). Plans are not portable across either."""
    from paretotune.evaluators.cache import cache_key

    return cache_key(
        "tensorrt-engine",
        ENGINE_FORMAT,
        hashlib.sha256(onnx_bytes).hexdigest(),
        dict(build),
        trt_version,
        {"name": gpu.get("name"), "capability": list(gpu.get("capability", ()))},
    )


def engine_build_options(spec: BuildSpec, profiles: Mapping[str, Any]) -> dict[str, Any]:
    """Everything besides the ONNX model that decides the built engine."""
    return {
        "bit_width": spec.bit_width,
        "options": [list(p) for p in spec.options],
        "layer_precisions": [list(p) for p in spec.layer_precisions],
        "profile": {k: [list(s) for s in v] for k, v in sorted(profiles.items())},
    }


# -- CUDA through pycuda -------------------------------------------------------------------------


_CUDA_CONTEXT: Any = None


def cuda() -> Any:
    """pycuda.driver with device 0's primary context current (the context PyTorch and the
    CUDA runtime share), pushed once per process and popped at exit: pycuda calls abort() at
    exit when its context stack is not empty, so a passing run would end with SIGABRT."""
    global _CUDA_CONTEXT
    import pycuda.driver as driver

    if _CUDA_CONTEXT is None:
        driver.init()
        if driver.Device.count() == 0:
            raise EvaluationError("engine='tensorrt' needs a CUDA device, and pycuda finds none")
        context = driver.Device(0).retain_primary_context()
        context.push()
        _CUDA_CONTEXT = context
        atexit.register(release_cuda)
    return driver


def release_cuda() -> None:
    """Pop the context `cuda` pushed (registered at exit; safe to call twice), and clear
    pycuda's context caches as pycuda.autoprimaryctx does."""
    global _CUDA_CONTEXT
    context, _CUDA_CONTEXT = _CUDA_CONTEXT, None
    if context is None:
        return
    try:
        context.pop()
    except Exception as exc:  # noqa: BLE001 - at exit a failed pop must not hide the real error
        logger.warning("popping the pycuda context failed: %s", exc)
        return
    try:
        from pycuda.tools import clear_context_caches
    except ImportError:
        return
    clear_context_caches()


def gpu_identity() -> dict[str, Any]:
    """The GPU an engine is built for: name and compute capability (device 0 of this process)."""
    driver = cuda()
    device = driver.Device(0)
    return {"name": device.name(), "capability": tuple(device.compute_capability())}


# -- building ------------------------------------------------------------------------------------


def _calibrator(
    trt: Any, batches: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]
) -> Any:
    """IInt8EntropyCalibrator2 over `batches` (cut to the first batch's shape, which is the
    calibration profile), copying each into device buffers it owns."""
    driver = cuda()
    first = batches[0]
    shapes = {n: first[n].shape for n in names}
    usable = [b for b in batches if all(b[n].shape == shapes[n] for n in names)]
    if len(usable) < len(batches):
        logger.info(
            "TensorRT calibration uses %d of %d calibration batches (the others differ in "
            "shape from the first)", len(usable), len(batches)
        )

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(usable)
            self.device = {
                n: driver.mem_alloc(np.ascontiguousarray(first[n]).nbytes) for n in names
            }
            self.cache: bytes | None = None

        def get_batch_size(self) -> int:
            return int(next(iter(shapes.values()))[0])

        def get_batch(self, names_asked: Sequence[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            for n in names:
                driver.memcpy_htod(self.device[n], np.ascontiguousarray(batch[n]))
            return [int(self.device[n]) for n in names_asked]

        def read_calibration_cache(self) -> bytes | None:
            return self.cache

        def write_calibration_cache(self, cache: bytes) -> None:
            self.cache = bytes(cache)

    return Calibrator(), shapes


def network_flags(trt: Any) -> int:
    """create_network's flags: EXPLICIT_BATCH before TensorRT 10 (the default since), and
    STRONGLY_TYPED from TensorRT 11, where it is the only mode (the flag is accepted there)."""
    major = trt_major(trt)
    kinds = getattr(trt, "NetworkDefinitionCreationFlag", None)
    flags = 0
    if kinds is not None and major < 10:
        flags |= 1 << int(kinds.EXPLICIT_BATCH)
    if kinds is not None and major >= STRONGLY_TYPED_MAJOR and hasattr(kinds, "STRONGLY_TYPED"):
        flags |= 1 << int(kinds.STRONGLY_TYPED)
    return flags


def _weak_typing(
    trt: Any,
    builder: Any,
    network: Any,
    config: Any,
    spec: BuildSpec,
    task: Task,
    needed: Sequence[str],
    input_shapes: Mapping[str, Any],
    assignments: Mapping[str, str],
    details: dict[str, Any],
) -> None:
    """TensorRT 10's precision: the builder flags, the int8 calibrator and the per-layer
    constraints (other layers pinned to FLOAT at bit_width 32)."""
    for precision in needed:
        config.set_flag(getattr(trt.BuilderFlag, PRECISION_FLAGS[precision]))
    if "int8" in needed and spec.option("int8_source") == "calibration":
        names = [n for n in input_shapes if n in task.example_inputs]
        calibrator, shapes = _calibrator(trt, task.calibration, names)
        config.int8_calibrator = calibrator
        calibration_profile = builder.create_optimization_profile()
        for name in names:
            calibration_profile.set_shape(name, shapes[name], shapes[name], shapes[name])
        config.set_calibration_profile(calibration_profile)
        details["int8_source"] = "calibration (IInt8EntropyCalibrator2)"
    elif "int8" in needed:
        details["int8_source"] = "explicit Q/DQ (the ONNX Runtime static int8 model)"
    pin = "fp32" if spec.bit_width == 32 else None
    report = apply_layer_precisions(network, config, assignments, trt, pin)
    details["layer_precision"] = report.to_dict()
    if report.unmatched_nodes:
        logger.warning(
            "TensorRT per-layer precision: ONNX nodes %s match no TensorRT layer",
            report.unmatched_nodes,
        )


def build_tensorrt(
    onnx_bytes: bytes,
    spec: BuildSpec,
    task: Task,
    layers: Sequence[str],
    cache: ArtifactCache | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Build (or load from `cache`) the serialized engine for `spec` from an ONNX model, which
    is already the Q/DQ model when `int8_source='qdq'`. Returns the plan and build details."""
    import onnx
    import tensorrt as trt

    model = onnx.load_from_string(onnx_bytes)
    gpu = gpu_identity()
    fp8 = has_fp8_qdq(model)
    needed = precisions_needed(spec, fp8)
    check_gpu_supports(needed, gpu["capability"], gpu["name"], trt)
    assignments, unmapped = node_precisions(spec.layer_precisions, layer_node_map(model, layers))
    strong = strongly_typed(trt)
    parsed = onnx_bytes
    cast_report: CastReport | None = None
    if strong:
        check_strongly_typed(spec, assignments, model, trt.__version__)
        halves = half_plan(model, spec, assignments)
        if halves:
            typed, cast_report = cast_nodes_to_half(model, halves)
            parsed = typed.SerializeToString()

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(parsed):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EvaluationError("TensorRT's ONNX parser failed: " + " | ".join(errors)[:1200])
    input_shapes = {
        network.get_input(i).name: tuple(network.get_input(i).shape)
        for i in range(network.num_inputs)
    }
    batches = [task.example_inputs, *task.calibration, *(inputs for inputs, _ in task.validation)]
    profiles = profile_shapes(input_shapes, batches, task.timing_batch(spec.batch_size))
    build = engine_build_options(spec, profiles)
    key = engine_cache_key(onnx_bytes, build, trt.__version__, gpu)
    details: dict[str, Any] = {
        "tensorrt_version": trt.__version__,
        "typing": "strong (precision from the ONNX graph's types)" if strong
        else "weak (builder precision flags)",
        "gpu": {"name": gpu["name"], "capability": list(gpu["capability"])},
        "precisions": needed,
        "profile": build["profile"],
        "engine_cache_key": key,
    }
    if cast_report is not None:
        details["graph_casts"] = cast_report.to_dict()
    if unmapped:
        details["unmapped_layers"] = unmapped
    if cache is not None:
        entry = cache.get(key)
        if entry is not None and entry.data is not None:
            details.update(entry.meta.get("details", {}), engine_cache_hit=True)
            return entry.data, details

    config = builder.create_builder_config()
    workspace_mb = spec.option("workspace_mb")
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * 1024**2)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profiles.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    if strong:
        if "int8" in needed:
            details["int8_source"] = "explicit Q/DQ (the ONNX Runtime static int8 model)"
    else:
        _weak_typing(
            trt, builder, network, config, spec, task, needed, input_shapes, assignments, details
        )
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EvaluationError(
            f"TensorRT could not build the engine (precisions {needed}, workspace_mb="
            f"{workspace_mb}); see TensorRT's log above for the layer it stopped at"
        )
    plan = bytes(serialized)
    details["engine_build_s"] = round(time.perf_counter() - started, 3)
    if cache is not None:
        cache.put(key, {"kind": "tensorrt engine", "details": details}, plan)
    return plan, details


# -- running -------------------------------------------------------------------------------------


class _Buffers:
    """Page-locked host and device buffers for one set of input shapes."""

    def __init__(self, driver: Any, engine: Any, context: Any, trt: Any,
                 shapes: Mapping[str, tuple[int, ...]], inputs: Sequence[str],
                 outputs: Sequence[str]) -> None:
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, Any] = {}
        for name in inputs:
            context.set_input_shape(name, shapes[name])
        for name in [*inputs, *outputs]:
            shape = tuple(context.get_tensor_shape(name))
            dtype = numpy_dtype(engine.get_tensor_dtype(name))
            self.host[name] = driver.pagelocked_empty(shape, dtype)
            self.device[name] = driver.mem_alloc(max(self.host[name].nbytes, 1))
            context.set_tensor_address(name, int(self.device[name]))


class TensorRTRunner:
    """A deserialized engine with one execution context, a stream and CUDA events."""

    engine = "tensorrt"

    def __init__(self, plan: bytes, input_names: Sequence[str]) -> None:
        import tensorrt as trt

        self._trt = trt
        self._driver = cuda()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EvaluationError("TensorRT could not deserialize the engine plan")
        self._context = self._engine.create_execution_context()
        self._stream = self._driver.Stream()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        missing = [n for n in self.inputs if n not in input_names]
        if missing:
            raise EvaluationError(
                f"the TensorRT engine needs inputs {missing}; the task gives {list(input_names)}"
            )
        self._max_batch = min(
            int(self._engine.get_tensor_profile_shape(n, 0)[2][0]) for n in self.inputs
        ) if self.inputs else 1
        self._buffers: dict[tuple[Any, ...], _Buffers] = {}
        self._events = [self._driver.Event() for _ in range(4)]

    def _bind(self, inputs: Mapping[str, np.ndarray]) -> _Buffers:
        shapes = {n: tuple(inputs[n].shape) for n in self.inputs}
        key = tuple(sorted(shapes.items()))
        buffers = self._buffers.get(key)
        if buffers is None:
            buffers = _Buffers(self._driver, self._engine, self._context, self._trt, shapes,
                               self.inputs, self.outputs)
            self._buffers = {key: buffers}  # one shape at a time: the context holds one
        for name in self.inputs:
            np.copyto(buffers.host[name], inputs[name], casting="same_kind")
        return buffers

    def _enqueue(self, buffers: _Buffers, copies: bool, events: Sequence[Any] = ()) -> None:
        """H2D, compute, D2H on the stream; `events` (4) mark start, compute start/end, end."""
        driver, stream = self._driver, self._stream

        def mark(i: int) -> None:
            if events:
                events[i].record(stream)

        mark(0)
        for name in self.inputs if copies else ():
            driver.memcpy_htod_async(buffers.device[name], buffers.host[name], stream)
        mark(1)
        if not self._context.execute_async_v3(stream.handle):
            raise EvaluationError("TensorRT execute_async_v3 failed")
        mark(2)
        for name in self.outputs if copies else ():
            driver.memcpy_dtoh_async(buffers.host[name], buffers.device[name], stream)
        mark(3)

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """One batch end to end (copies in, compute, copies out, synchronize)."""
        buffers = self._bind(inputs)

        def run() -> Any:
            self._enqueue(buffers, copies=True)
            self._stream.synchronize()
            return buffers.host[self.outputs[0]]

        return run

    def prepare_timed(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], tuple[float, float]]:
        """One batch end to end, measured by CUDA events: (end-to-end ms, compute ms)."""
        buffers = self._bind(inputs)
        events = self._events

        def sample() -> tuple[float, float]:
            self._enqueue(buffers, copies=True, events=events)
            events[3].synchronize()
            return events[3].time_since(events[0]), events[2].time_since(events[1])

        return sample

    def run_all(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Every output (engine order), in chunks of at most the profile's max batch."""
        rows = int(inputs[self.inputs[0]].shape[0])
        chunks: list[list[np.ndarray]] = []
        for start in range(0, rows, self._max_batch):
            chunk = {n: np.ascontiguousarray(inputs[n][start : start + self._max_batch])
                     for n in self.inputs}
            buffers = self._bind(chunk)
            self._enqueue(buffers, copies=True)
            self._stream.synchronize()
            chunks.append([np.array(buffers.host[n], copy=True) for n in self.outputs])
        return [np.concatenate([c[i] for c in chunks], axis=0) for i in range(len(self.outputs))]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The first output as float32."""
        return np.asarray(self.run_all(inputs)[0], dtype=np.float32)


def plan_io(plan: bytes) -> dict[str, Any]:
    """Names, numpy dtypes and shapes (-1 for dynamic) of an engine's inputs and outputs."""
    import tensorrt as trt

    cuda()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EvaluationError("TensorRT could not deserialize the engine plan")
    out: dict[str, Any] = {"inputs": [], "outputs": []}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        spec = {
            "name": name,
            "dtype": numpy_dtype(engine.get_tensor_dtype(name)).name,
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
        }
        kind = "inputs" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "outputs"
        out[kind].append(spec)
    return out
