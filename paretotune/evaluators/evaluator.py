"""`TaskEvaluator`: Config in, built engine and honest `Measurement` out.

One instance lives in a worker's long-lived child process and serves many trials, so it keeps
recent builds in memory (a config differing only in batch size or threads reuses the built
engine and its accuracy) and shares finished builds with other processes via `ArtifactCache`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import EvaluationError, InvalidConfigError, ParetotuneError
from paretotune.evaluators.cache import DEFAULT_MAX_BYTES, ArtifactCache, cache_key
from paretotune.evaluators.config import BuildSpec, resolve_config
from paretotune.evaluators.hardware import (
    hardware_fingerprint,
    library_versions,
    peak_rss_bytes,
    reset_peak_rss,
)
from paretotune.evaluators.measurement import Measurement
from paretotune.evaluators.slot import TimingSlot, slot_name, timing_slot
from paretotune.evaluators.task import Task
from paretotune.evaluators.timing import TimingPolicy, TimingResult, time_callable, time_samples
from paretotune.space.scenario import Scenario, SingleStream, scenario_from_dict

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

BYTES_PER_WEIGHT = {32: 4.0, 16: 2.0, 8: 1.0, 4: 0.5}
CACHE_FORMAT = 2  # bump when the artifact layout changes (2: torch artifacts are state_dicts)
TORCH_ENGINES = ("torch", "torch_cuda")
#: the query sample library of a serving measurement holds at least this many samples (the
#: task's example rows, cycled), one per LoadGen query sample
QSL_MIN_SAMPLES = 64


@dataclass
class _Built:
    spec: BuildSpec
    artifact: bytes
    accuracy: float
    model_bytes: int
    build_s: float
    details: dict[str, Any]
    runners: dict[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltArtifact:
    """One configuration built for deployment (`TaskEvaluator.build_artifact`).

    `data` is the ONNX model (engine "onnxruntime"), the TensorRT plan, or for the torch engines
    the fp32 module's weights (`torch_engine.serialize`; `load_torch_module` gives the engine's
    module); `accuracy` is the task metric measured when it was built; `source` says where it
    came from: "memory", "disk" (the artifact cache) or "built" (built just now).
    """

    engine: str
    data: bytes
    spec: BuildSpec
    accuracy: float
    source: str
    cache_key: str
    details: dict[str, Any]


class _CallableRunner:
    def __init__(self, run: Callable[[Mapping[str, np.ndarray]], np.ndarray]) -> None:
        self._run = run

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self._run(inputs), dtype=np.float32)


class TaskEvaluator:
    """Evaluate configurations of `task`: `evaluator(config) -> Measurement`.

    cache_dir: the shared artifact cache (default `$PARETOTUNE_CACHE_DIR` or
    `./.paretotune-cache`); `timing`: the timing policy; `memory_slots`: built engines kept in
    memory; `exclusive_timing`: time in the machine's timing slot (`evaluators.slot`), so no
    other paretotune worker builds or times beside a timed window (default on; the
    environment's `PARETOTUNE_TIMING_SLOT=off` turns it off everywhere).
    """

    def __init__(
        self,
        task: Task,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        timing: TimingPolicy | None = None,
        max_cache_bytes: int = DEFAULT_MAX_BYTES,
        memory_slots: int = 4,
        exclusive_timing: bool = True,
        scenario: Scenario | Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(task, Task):
            raise TypeError(f"TaskEvaluator needs a paretotune Task, got {type(task).__name__}")
        self.task = task
        #: single_stream times a closed loop of batches; server / offline run MLPerf LoadGen
        #: against the engine behind the dynamic batcher (`evaluators.serving`)
        self.scenario: Scenario = scenario_from_dict(scenario)
        self.cache = ArtifactCache(cache_dir, max_bytes=max_cache_bytes)
        self.timing = timing or TimingPolicy()
        self.memory_slots = memory_slots
        self.exclusive_timing = exclusive_timing
        self._built: OrderedDict[str, _Built] = OrderedDict()
        self._exports: OrderedDict[str, bytes] = OrderedDict()
        self._baselines: dict[tuple[int, int], dict[str, Any]] = {}
        self._reference_outputs: np.ndarray | None = None
        self.builds = 0  # how many artifacts this instance built (not loaded): for tests, logs

    # -- the public call -------------------------------------------------------------------

    def __call__(self, config: Mapping[str, Any]) -> Measurement:
        started = time.perf_counter()
        spec = self._resolve(config)
        slot = self._slot(spec.on_gpu)
        with slot.shared():
            return self._evaluate(spec, slot, started)

    def _slot(self, on_gpu: bool) -> TimingSlot:
        if not self.exclusive_timing:
            return TimingSlot("off", None)
        return timing_slot(slot_name(on_gpu))

    def _evaluate(self, spec: BuildSpec, slot: TimingSlot, started: float) -> Measurement:
        if not isinstance(self.scenario, SingleStream):
            return self._evaluate_serving(spec, slot, started)
        key = self._build_key(spec)
        built, cache_hit, phase_build = self._get_built(spec, key)
        self._set_threads(spec.threads)
        runner = self._runner(built, spec.threads)
        inputs = self._batch(spec.batch_size)
        compute: TimingResult | None = None
        try:
            reset = reset_peak_rss()
            with slot.exclusive():
                if hasattr(runner, "prepare_timed"):  # GPU engines time themselves on the device
                    result, compute = time_samples(
                        runner.prepare_timed(inputs), spec.batch_size, self.timing
                    )
                else:
                    result = time_callable(runner.prepare(inputs), spec.batch_size, self.timing)
            slot_wait_s = slot.last_wait_s
            peak = peak_rss_bytes()
        except ParetotuneError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine failing to run is the trial failing
            raise EvaluationError(
                f"running the built {spec.engine} engine at batch_size={spec.batch_size} failed: {exc}"
            ) from exc
        baseline_started = time.perf_counter()
        baseline = self._baseline(spec.batch_size, spec.threads)
        metrics = {
            "latency_p50_ms": result.p50_ms,
            "latency_p90_ms": result.p90_ms,
            "throughput": result.throughput,
            "accuracy": built.accuracy,
            "model_bytes": float(built.model_bytes),
            "peak_memory_bytes": float(peak),
            "build_s": built.build_s,
            "baseline_latency_p50_ms": baseline["p50_ms"],
        }
        if result.p99_ms is not None:
            metrics["latency_p99_ms"] = result.p99_ms
        details: dict[str, Any] = {
            **result.details(),
            "cache_hit": cache_hit,
            "engine": spec.engine,
            "build": spec.build_dict(),
            "batch_size": spec.batch_size,
            "threads": spec.threads,
            "build_details": built.details,
            "baseline": {k: v for k, v in baseline.items() if k != "p50_ms"},
            "peak_memory": "process VmHWM during timing" if reset else "process lifetime peak RSS",
            "timing_policy": self.timing.to_dict(),
            "timing_slot": {"path": slot.path, "wait_s": round(slot_wait_s, 4)}
            if slot.enabled
            else None,
            "hardware": hardware_fingerprint(spec.threads),
            "phases_s": {
                "build": round(phase_build, 4),
                "measure": round(result.measure_s, 4),
                "baseline": round(time.perf_counter() - baseline_started, 4),
                "total": round(time.perf_counter() - started, 4),
            },
        }
        if spec.ignored:
            details["ignored_keys"] = list(spec.ignored)
        if compute is not None:
            details.update(_gpu_timing_details(spec.engine, compute))
        return Measurement(metrics=metrics, details=details)

    def _evaluate_serving(self, spec: BuildSpec, slot: TimingSlot, started: float) -> Measurement:
        """The server or offline scenario: LoadGen drives the built engine behind the dynamic
        batcher (one runner per instance), holding the machine's slot exclusively throughout
        (every core is in use). A config differing only in its batcher reuses the built engine
        and its accuracy (the batcher is not part of the build key)."""
        from paretotune.evaluators.serving import measure_serving

        key = self._build_key(spec)
        built, cache_hit, phase_build = self._get_built(spec, key)
        self._set_threads(spec.threads)
        samples = max(QSL_MIN_SAMPLES, next(iter(self.task.example_inputs.values())).shape[0])
        inputs = self.task.timing_batch(samples)
        first = self._runner(built, spec.threads)
        made = [first]

        def runner_factory() -> Any:  # the first instance reuses the cached runner
            return made.pop() if made else self._instance_runner(built, spec.threads)

        reset = reset_peak_rss()
        measured = time.perf_counter()
        with slot.exclusive():
            result = measure_serving(
                runner_factory, inputs, self.scenario, spec.batcher, padding_mask=self.task.padding_mask
            )
        metrics = {
            **result.metrics(),
            "accuracy": built.accuracy,
            "model_bytes": float(built.model_bytes),
            "peak_memory_bytes": float(peak_rss_bytes()),
            "build_s": built.build_s,
        }
        details: dict[str, Any] = {
            "scenario": self.scenario.to_dict(),
            "serving": result.to_dict(),
            "batcher": spec.batcher.to_dict(),
            "cache_hit": cache_hit,
            "engine": spec.engine,
            "build": spec.build_dict(),
            "threads": spec.threads,
            "build_details": built.details,
            "peak_memory": "process VmHWM during serving" if reset else "process lifetime peak RSS",
            "timing_slot": {"path": slot.path, "wait_s": round(slot.last_wait_s, 4)} if slot.enabled else None,
            "hardware": hardware_fingerprint(spec.threads),
            "phases_s": {
                "build": round(phase_build, 4),
                "measure": round(time.perf_counter() - measured, 4),
                "total": round(time.perf_counter() - started, 4),
            },
        }
        if spec.ignored:
            details["ignored_keys"] = list(spec.ignored)
        return Measurement(metrics=metrics, details=details)

    def build_artifact(self, config: Mapping[str, Any]) -> BuiltArtifact:
        """The built artifact of `config`: from memory or the artifact cache, else built now."""
        spec = self._resolve(config)
        key = self._build_key(spec)
        built, hit, _ = self._get_built(spec, key)
        source = "built" if hit is False else str(hit)
        return BuiltArtifact(
            spec.engine, built.artifact, spec, built.accuracy, source, key, dict(built.details)
        )

    def measure_accuracy(self, run: Callable[[Mapping[str, np.ndarray]], np.ndarray]) -> float:
        """The task metric of any predictor (inputs -> first output) over the whole validation
        set, untimed: how an exported bundle is checked against the recorded accuracy."""
        return self._accuracy(_CallableRunner(run))

    def reference_accuracy(self) -> float:
        """The task metric of the unmodified model on its reference engine (the baseline)."""
        reference = None if self.task.labelled else self._reference_outputs_joined()
        return self.task.score(self._reference_validation_outputs(), reference)

    # -- config ----------------------------------------------------------------------------

    def _resolve(self, config: Mapping[str, Any]) -> BuildSpec:
        task = self.task
        spec = resolve_config(config, task.layers)
        engines = task.available_engines()
        if spec.engine not in engines:
            why = task.unavailable_engines().get(spec.engine)
            raise InvalidConfigError(
                f"engine={spec.engine!r} cannot run task {task.name!r} here"
                f"{f' ({why})' if why else ''}; available engines: {engines}"
            )
        if task.is_onnx and (spec.prune_ratio > 0 or spec.sparsity > 0):
            raise InvalidConfigError(
                f"prune_ratio={spec.prune_ratio} / sparsity={spec.sparsity}: pruning needs a "
                f"PyTorch model, and task {task.name!r} is an .onnx file; allowed: 0"
            )
        if spec.engine == "torch" and spec.bit_width == 8:
            layers = task.layers
            if not any(layers[n] == "Linear" for n in layers if n not in spec.excluded_layers):
                raise InvalidConfigError(
                    "bit_width=8 on engine='torch' quantizes Linear layers (dynamic int8), and "
                    "this configuration keeps every Linear layer in fp32"
                )
        return spec

    def _build_key(self, spec: BuildSpec) -> str:
        parts: list[Any] = [
            "build",
            CACHE_FORMAT,
            self.task.model_id(),
            self.task.data_id(),
            spec.build_dict(),
            library_versions(),
        ]
        if spec.on_gpu:  # a GPU build depends on the GPU model and the GPU packages too
            from paretotune.evaluators.availability import gpu_build_identity

            parts.append(gpu_build_identity())
        return cache_key(*parts)

    # -- building --------------------------------------------------------------------------

    def _get_built(self, spec: BuildSpec, key: str) -> tuple[_Built, str | bool, float]:
        started = time.perf_counter()
        if key in self._built:
            self._built.move_to_end(key)
            return self._built[key], "memory", time.perf_counter() - started
        built = self._from_disk(spec, key)
        hit: str | bool = "disk"
        if built is None:
            try:
                built = self._build(spec)
            except ParetotuneError:
                raise
            except Exception as exc:  # noqa: BLE001 - any build crash fails the trial with its reason
                raise EvaluationError(
                    f"building {spec.engine} bit_width={spec.bit_width} failed: {type(exc).__name__}: {exc}"
                ) from exc
            self.builds += 1
            meta = {
                "accuracy": built.accuracy,
                "model_bytes": built.model_bytes,
                "build_s": built.build_s,
                "details": built.details,
            }
            self.cache.put(key, meta, built.artifact)
            hit = False
        self._built[key] = built
        while len(self._built) > self.memory_slots:
            self._built.popitem(last=False)
        return built, hit, time.perf_counter() - started

    def _from_disk(self, spec: BuildSpec, key: str) -> _Built | None:
        """The artifact cache's entry for `key`, or None when it has none that is usable; a torch
        artifact is restored here (an entry that does not restore is rebuilt, not a failure)."""
        entry = self.cache.get(key)
        if entry is None or entry.data is None:
            return None
        meta = entry.meta
        try:
            built = _Built(
                spec,
                entry.data,
                float(meta["accuracy"]),
                int(meta["model_bytes"]),
                float(meta["build_s"]),
                dict(meta["details"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("artifact cache entry %s has bad metadata (%r); building it again", key, exc)
            return None
        if spec.engine in TORCH_ENGINES:
            from paretotune.evaluators import torch_engine

            try:
                module = torch_engine.restore(entry.data, self.task.fresh_module())
            except EvaluationError as exc:
                logger.warning("artifact cache entry %s: %s; building it again", key, exc)
                return None
            built.runners[spec.threads] = self._torch_runner(
                spec, engine_module(self.task, spec, module)
            )
        return built

    def _build(self, spec: BuildSpec) -> _Built:
        started = time.perf_counter()
        task = self.task
        details: dict[str, Any] = {}
        module: torch.nn.Module | None = None
        runner: Any = None
        if not task.is_onnx:
            module = self._transformed_module(spec, details)
        if spec.engine in TORCH_ENGINES:
            from paretotune.evaluators import torch_engine

            if module is None:  # _resolve offers torch only to tasks with a module factory
                raise InvalidConfigError(
                    f"engine={spec.engine!r} needs a PyTorch model, and task {task.name!r} is an "
                    ".onnx file"
                )
            # the artifact is the fp32 module; measure what a cache hit will restore from it
            artifact = torch_engine.serialize(module)
            restored = torch_engine.restore(artifact, task.fresh_module())
            if spec.prune_ratio > 0:
                _check_restored(module, restored, task)
            built_module = engine_module(task, spec, restored)
            model_bytes = torch_engine.module_bytes(built_module)
            runner = self._torch_runner(spec, built_module)
        elif spec.engine == "tensorrt":
            artifact = self._build_tensorrt(spec, module, details)
            model_bytes = len(artifact)
        else:
            from paretotune.evaluators import onnxruntime_engine as ort_engine

            fp32 = task.onnx_bytes() if module is None else self._export(spec, module)
            ort_spec = spec
            if spec.engine == "onnxruntime_tensorrt" and spec.bit_width == 16:
                ort_spec = dataclasses.replace(spec, bit_width=32)  # TensorRT's fp16 flag
            artifact, info = ort_engine.build_onnxruntime(fp32, ort_spec, task, list(task.layers))
            details.update(info)
            details["op_counts"] = ort_engine.onnx_summary(artifact)
            model_bytes = len(artifact)
        if (
            "zeroed_weights" in details
        ):  # unstructured sparsity: credit the size of a bitmask encoding
            details["dense_model_bytes"] = model_bytes
            saved = (
                details["zeroed_weights"] * BYTES_PER_WEIGHT[spec.bit_width]
                - details["sparse_weights"] / 8
            )
            model_bytes = int(max(model_bytes - saved, 0))
        built = _Built(spec, artifact, float("nan"), model_bytes, 0.0, details)
        if runner is not None:
            built.runners[1] = runner
        runner = self._runner(built, 1)
        if spec.torch_compile:  # compiling happens on the first call: part of the build
            runner.run(self.task.example_inputs)
        built.build_s = time.perf_counter() - started
        built.accuracy = self._accuracy(runner)
        return built

    def _build_tensorrt(
        self, spec: BuildSpec, module: torch.nn.Module | None, details: dict[str, Any]
    ) -> bytes:
        """The serialized TensorRT engine: from the fp32 ONNX model, or from ONNX Runtime's
        symmetric static-int8 Q/DQ model when int8 comes from explicit Q/DQ."""
        from paretotune.evaluators import onnxruntime_engine as ort_engine
        from paretotune.evaluators.tensorrt_engine import build_tensorrt

        task = self.task
        onnx_model = task.onnx_bytes() if module is None else self._export(spec, module)
        if spec.bit_width == 8 and spec.option("int8_source") == "qdq":
            onnx_model, info = ort_engine.build_onnxruntime(
                onnx_model, spec, task, list(task.layers)
            )
            details["qdq"] = info
        plan, info = build_tensorrt(onnx_model, spec, task, list(task.layers), cache=self.cache)
        details.update(info)
        return plan

    def _transformed_module(self, spec: BuildSpec, details: dict[str, Any]) -> torch.nn.Module:
        from paretotune.evaluators import pruning
        from paretotune.evaluators.torch_engine import TorchRunner, to_tensors

        module = self.task.fresh_module()
        if spec.prune_ratio > 0:
            before = pruning.count_parameters(module)
            args = to_tensors(self.task.example_inputs, self.task.input_names)
            pruning.prune_structured(module, args, spec.prune_ratio, self.task.prune_ignore)
            details["parameters_before"], details["parameters"] = (
                before,
                pruning.count_parameters(module),
            )
            if self.task.finetune is not None:
                tuned = time.perf_counter()
                try:
                    self.task.finetune(module)
                except Exception as exc:  # noqa: BLE001 - the user's hook failing fails the trial
                    raise EvaluationError(f"the task's finetune hook raised {exc!r}") from exc
                module.eval()
                details["finetune_s"] = round(time.perf_counter() - tuned, 3)
            out = TorchRunner(module, self.task.input_names).run(self.task.example_inputs)
            ref = TorchRunner(self.task.reference_module(), self.task.input_names).run(
                self.task.example_inputs
            )
            if out.shape != ref.shape:
                raise EvaluationError(
                    f"pruning changed the output shape from {ref.shape} to {out.shape}; name the "
                    f"output layer in Task(prune_ignore=[...])"
                )
        if spec.sparsity > 0:
            zeros, total = pruning.apply_sparsity(module, spec.sparsity)
            details["zeroed_weights"], details["sparse_weights"] = zeros, total
        return module

    def _export(self, spec: BuildSpec, module: Any) -> bytes:
        """The fp32 ONNX export of the (pruned) model, shared by every ORT variant of it."""
        from paretotune.evaluators.onnxruntime_engine import export_onnx

        key = cache_key(
            "export",
            CACHE_FORMAT,
            self.task.model_id(),
            self.task.data_id(),
            spec.prune_ratio,
            spec.sparsity,
            library_versions(),
        )
        if key in self._exports:
            return self._exports[key]
        entry = self.cache.get(key)
        data = entry.data if entry is not None and entry.data is not None else None
        if data is None:
            data = export_onnx(module, self.task)
            self.cache.put(key, {"kind": "fp32 onnx export"}, data)
        self._exports[key] = data
        while len(self._exports) > 2:
            self._exports.popitem(last=False)
        return data

    def _runner(self, built: _Built, threads: int) -> Any:
        runner = built.runners.get(threads)
        if runner is not None:
            return runner
        if built.spec.on_gpu:
            runner = next(iter(built.runners.values()), None) or self._gpu_runner(built)
        elif built.spec.engine == "torch":
            runner = next(iter(built.runners.values()), None)  # thread count is process-wide
            if runner is None:
                runner = self._instance_runner(built, threads)
        else:
            runner = self._instance_runner(built, threads)
        built.runners[threads] = runner
        return runner

    def _instance_runner(self, built: _Built, threads: int) -> Any:
        """A new runner of the built engine: one engine instance behind the dynamic batcher
        (its own ONNX Runtime session; the torch module itself is shared, since torch's
        thread pool is the process's anyway and inference does not change the module)."""
        if built.spec.engine == "torch":
            module = next((r.module for r in built.runners.values() if hasattr(r, "module")), None)
            if module is None:
                module = load_torch_module(self.task, built.spec, built.artifact)
            return self._torch_runner(built.spec, module)
        if built.spec.on_gpu:
            return self._gpu_runner(built)
        from paretotune.evaluators.onnxruntime_engine import OrtRunner

        return OrtRunner(built.artifact, threads)

    def _gpu_runner(self, built: _Built) -> Any:
        """A runner for a GPU engine (threads do not apply: one runner serves every count)."""
        spec = built.spec
        if spec.engine == "torch_cuda":
            return self._torch_runner(spec, load_torch_module(self.task, spec, built.artifact))
        if spec.engine == "tensorrt":
            from paretotune.evaluators.tensorrt_engine import TensorRTRunner

            return TensorRTRunner(built.artifact, self.task.input_names)
        from paretotune.evaluators.onnxruntime_engine import OrtGpuRunner

        engine_cache = self.cache.subdir("ort-tensorrt-engines")
        return OrtGpuRunner(built.artifact, spec, str(engine_cache))

    def _torch_runner(self, spec: BuildSpec, module: torch.nn.Module) -> Any:
        """The runner of an engine module (`engine_module`): torch on the CPU, or torch_cuda."""
        if spec.engine == "torch_cuda":
            from paretotune.evaluators.torch_cuda_engine import TorchCudaRunner, compute_dtype

            return TorchCudaRunner(
                module,
                self.task.input_names,
                compute_dtype(spec.bit_width, spec.option("half")),
                cuda_graphs=spec.option("cuda_graphs"),
                compile=spec.torch_compile,
            )
        import torch

        from paretotune.evaluators import torch_engine

        if spec.torch_compile:
            module = torch_engine.compile_module(module)
        dtype = torch.bfloat16 if spec.bit_width == 16 else None
        return torch_engine.TorchRunner(module, self.task.input_names, dtype)

    def _set_threads(self, threads: int) -> None:
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    # -- accuracy and baseline -------------------------------------------------------------

    def _accuracy(self, runner: Any) -> float:
        """The task metric over the whole validation set: untimed, on the built engine."""
        outputs = [runner.run(inputs) for inputs, _ in self.task.validation]
        reference = None if self.task.labelled else self._reference_outputs_joined()
        value = self.task.score(outputs, reference)
        if not np.isfinite(value):
            raise EvaluationError(f"the task metric returned a non-finite value: {value!r}")
        return value

    def _reference_runner(self, threads: int) -> Any:
        if self.task.is_onnx:
            from paretotune.evaluators.onnxruntime_engine import OrtRunner

            return OrtRunner(self.task.onnx_bytes(), threads)
        from paretotune.evaluators.torch_engine import TorchRunner

        return TorchRunner(self.task.reference_module(), self.task.input_names)

    def _reference_validation_outputs(self) -> list[np.ndarray]:
        runner = self._reference_runner(1)
        return [runner.run(inputs) for inputs, _ in self.task.validation]

    def _reference_outputs_joined(self) -> np.ndarray:
        if self._reference_outputs is None:
            self._reference_outputs = np.concatenate(self._reference_validation_outputs(), axis=0)
        return self._reference_outputs

    def _baseline(self, batch_size: int, threads: int) -> dict[str, Any]:
        """p50 of the unmodified model on torch eager fp32 (ORT fp32 for .onnx tasks)."""
        slot = (batch_size, threads)
        if slot in self._baselines:
            return self._baselines[slot]
        engine = "onnxruntime" if self.task.is_onnx else "torch"
        key = cache_key(
            "baseline",
            CACHE_FORMAT,
            self.task.model_id(),
            self.task.data_id(),
            engine,
            batch_size,
            threads,
            self.timing.to_dict(),
            hardware_fingerprint(),
        )
        entry = self.cache.get(key)
        if entry is not None:
            baseline = dict(entry.meta, cache_hit=True)
        else:
            self._set_threads(threads)
            run = self._reference_runner(threads).prepare(self._batch(batch_size))
            with self._slot(on_gpu=False).exclusive():
                result: TimingResult = time_callable(run, batch_size, self.timing)
            baseline = {
                "engine": engine,
                "bit_width": 32,
                "p50_ms": result.p50_ms,
                "stable": result.stable,
                "spread": round(result.spread, 4),
                "n_samples": result.n_samples,
            }
            self.cache.put(key, baseline)
            baseline = dict(baseline, cache_hit=False)
        self._baselines[slot] = baseline
        return baseline

    def _batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """Fixed timing inputs at `batch_size`, the same for every engine (`Task.timing_batch`)."""
        return self.task.timing_batch(batch_size)


def engine_module(task: Task, spec: BuildSpec, module: torch.nn.Module) -> torch.nn.Module:
    """The torch / torch_cuda engine's module for `spec`, from the fp32 (pruned) `module`:
    cast or dynamically quantized, deterministically (the same weights give the same module)."""
    if spec.engine == "torch_cuda":
        from paretotune.evaluators.torch_cuda_engine import build_torch_cuda

        return build_torch_cuda(module, spec.bit_width, spec.option("half"))
    if spec.engine != "torch":
        raise InvalidConfigError(
            f"engine={spec.engine!r} has no torch module; allowed: {list(TORCH_ENGINES)}"
        )
    from paretotune.evaluators.torch_engine import build_torch

    quantize = [n for n in task.layers if n not in spec.excluded_layers]
    return build_torch(module, spec.bit_width, spec.per_channel, quantize)


def load_torch_module(task: Task, spec: BuildSpec, data: bytes) -> torch.nn.Module:
    """The engine's module of a torch artifact (`BuiltArtifact.data`): its fp32 weights restored
    on a fresh copy of the task's model (no unpickling), then built for `spec`."""
    from paretotune.evaluators.torch_engine import restore

    return engine_module(task, spec, restore(data, task.fresh_module()))


def _check_restored(module: torch.nn.Module, restored: torch.nn.Module, task: Task) -> None:
    """A pruned module must come back from its artifact whole: same outputs on the examples.
    A model keeping shapes in something other than tensors and plain attributes fails here."""
    from paretotune.evaluators.torch_engine import TorchRunner

    expected = TorchRunner(module, task.input_names).run(task.example_inputs)
    got = TorchRunner(restored, task.input_names).run(task.example_inputs)
    if expected.shape != got.shape or not np.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise EvaluationError(
            "the pruned model does not round-trip through its torch artifact (a state_dict and "
            "plain attributes): it keeps shape-dependent state elsewhere, so it cannot be cached"
        )


def _gpu_timing_details(engine: str, compute: TimingResult) -> dict[str, Any]:
    """Compute-only latency (no host/device copies) beside the end-to-end metrics."""
    clock = (
        "host clock after ONNX Runtime's synchronized run"
        if engine.startswith("onnxruntime")
        else "CUDA events"
    )
    return {
        "timing_clock": clock,
        "latency": "end to end: host-to-device copies, compute, device-to-host copies",
        "compute_latency_p50_ms": compute.p50_ms,
        "compute_latency_p90_ms": compute.p90_ms,
        "compute_latency_p99_ms": compute.p99_ms,
        "compute_stable": compute.stable,
        "compute_spread": round(compute.spread, 4),
    }
