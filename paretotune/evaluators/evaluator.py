"""`TaskEvaluator`: Config in, built engine and honest `Measurement` out.

One instance lives in a worker's long-lived child process and serves many trials, so it keeps
recent builds in memory (a config differing only in batch size or threads reuses the built
engine and its accuracy) and shares finished builds with other processes via `ArtifactCache`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from paretotune.errors import ConfigError, EvaluationError, InvalidConfigError, ParetotuneError
from paretotune.evaluators import engines
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
from paretotune.evaluators.sources import CACHE_FORMAT, ModelSource, SpecSource
from paretotune.evaluators.task import Task
from paretotune.evaluators.timing import (
    CI_LEVEL,
    CI_METHOD,
    PairedTiming,
    TimingPolicy,
    TimingResult,
    pair_side,
    time_paired,
    time_samples,
)
from paretotune.evaluators.timing import _host_clock as host_clock
from paretotune.space.scenario import Scenario, SingleStream, scenario_from_dict

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

BYTES_PER_WEIGHT = {32: 4.0, 16: 2.0, 8: 1.0, 4: 0.5}
#: how the reference of `speedup` is timed: "paired" (in the same process, interleaved with the
#: trial window by window) or "none" (no reference, no `speedup`: half the timing, for studies
#: whose objectives and constraints don't use it)
REFERENCE_POLICIES = ("paired", "none")
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
    #: threads (or threads and runtime options, `_runner_key`) -> runner
    runners: dict[Any, Any] = field(default_factory=dict)


#: where a trial's built artifact came from: this process's memory, the on-disk artifact cache,
#: or a build just now
ARTIFACT_SOURCES = ("memory", "disk", "built")


@dataclass(frozen=True)
class BuiltArtifact:
    """One configuration built for deployment (`TaskEvaluator.build_artifact`).

    `data` is the engine's artifact: the ONNX model (engine "onnxruntime"), the TensorRT plan,
    the packed OpenVINO IR, or for the torch engines the fp32 module's weights
    (`torch_engine.serialize`; `sources.load_torch_module` gives the engine's module); `accuracy` is the task metric measured when it was built; `source` says where it
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
    environment's `PARETOTUNE_TIMING_SLOT=off` turns it off everywhere); `reference`: how the
    reference of `speedup` is timed (`REFERENCE_POLICIES`): "paired" (default) times the
    unmodified model interleaved with the trial, window by window, in the same process, so
    `speedup` is the median of the per-block ratios; "none" skips it (no `speedup`, no
    `baseline_latency_p50_ms`). A timing never comes from the artifact cache.
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
        reference: str = "paired",
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
        if reference not in REFERENCE_POLICIES:
            raise ConfigError(f"reference must be one of {list(REFERENCE_POLICIES)}, got {reference!r}")
        self.reference = reference
        self._built: OrderedDict[str, _Built] = OrderedDict()
        self.models = ModelSource(task, self.cache)
        #: the reference model's runner per thread count (a runner, never a timing)
        self._reference_runners: dict[int, Any] = {}
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
        built, source, phase_build = self._get_built(spec, key)
        self._set_threads(spec.threads)
        runner = self._runner(built, spec.threads, spec)
        inputs = self._batch(spec.batch_size)
        compute: TimingResult | None = None
        paired: PairedTiming | None = None
        try:
            # GPU engines time themselves on the device (CUDA events)
            timed = runner.prepare_timed(inputs) if hasattr(runner, "prepare_timed") else host_clock(runner.prepare(inputs))
            reference = None
            if self.reference == "paired":
                reference = host_clock(self._reference_run(spec.threads).prepare(inputs))
            reset = reset_peak_rss()
            with slot.exclusive(), self._reference_slot(spec.on_gpu, reference is not None):
                if reference is not None:
                    # the trial's peak memory is its own: read after calls of the trial alone,
                    # before the reference's calls join it
                    for _ in range(max(1, self.timing.warmup_iters)):
                        timed()
                    peak = peak_rss_bytes()
                    paired = time_paired(timed, reference, spec.batch_size, self.timing)
                    results = paired.candidate
                else:
                    results = time_samples(timed, spec.batch_size, self.timing)
                    peak = peak_rss_bytes()
            result = results[0]
            compute = results[1] if len(results) > 1 else None
            slot_wait_s = slot.last_wait_s
        except Exception as exc:  # the engine failing to run is the trial failing
            _reraise(exc, f"running the built {spec.engine} engine at batch_size={spec.batch_size}")
        intervals_started = time.perf_counter()
        metrics = {
            "latency_p50_ms": result.p50_ms,
            "latency_p90_ms": result.p90_ms,
            "throughput": result.throughput,
            "accuracy": built.accuracy,
            "model_bytes": float(built.model_bytes),
            "peak_memory_bytes": float(peak),
            "build_s": built.build_s,
        }
        if result.p99_ms is not None:
            metrics["latency_p99_ms"] = result.p99_ms
        intervals = {f"{k}_ci": list(v) for k, v in result.intervals().items()}
        if paired is not None:
            metrics["baseline_latency_p50_ms"] = paired.reference.p50_ms
            metrics["speedup"] = paired.speedup
            intervals["speedup_ci"] = list(paired.speedup_interval())
        details: dict[str, Any] = {
            **result.details(),
            **intervals,
            "ci_level": CI_LEVEL,
            "ci_method": CI_METHOD,
            **_trial_details(spec, built, source, slot, slot_wait_s, reset, "timing"),
            "batch_size": spec.batch_size,
            "baseline": self._reference_details(paired),
            "timing_policy": self.timing.to_dict(),
            "phases_s": {
                "build": round(phase_build, 4),
                "measure": round(result.measure_s, 4),
                "intervals": round(time.perf_counter() - intervals_started, 4),
                "total": round(time.perf_counter() - started, 4),
            },
        }
        if compute is not None:
            details.update(_gpu_timing_details(runner, compute))
        return Measurement(metrics=metrics, details=details)

    def _evaluate_serving(self, spec: BuildSpec, slot: TimingSlot, started: float) -> Measurement:
        """The server or offline scenario: LoadGen drives the built engine behind the dynamic
        batcher (one runner per instance), holding the machine's slot exclusively throughout
        (every core is in use). A config differing only in its batcher reuses the built engine
        and its accuracy (the batcher is not part of the build key)."""
        from paretotune.evaluators.serving import NoValidQPS, ServingResult, measure_serving

        key = self._build_key(spec)
        built, source, phase_build = self._get_built(spec, key)
        self._set_threads(spec.threads)
        samples = max(QSL_MIN_SAMPLES, next(iter(self.task.example_inputs.values())).shape[0])
        inputs = self.task.timing_batch(samples)
        first = self._runner(built, spec.threads, spec)
        made = [first]

        def runner_factory() -> Any:  # the first instance reuses the cached runner
            return made.pop() if made else self._instance_runner(built, spec.threads, spec)

        reset = reset_peak_rss()
        measured = time.perf_counter()
        try:
            with slot.exclusive():
                result = measure_serving(
                    runner_factory, inputs, self.scenario, spec.batcher, padding_mask=self.task.padding_mask
                )
        except NoValidQPS as exc:
            # measured, and it sustains no load within the bound: server_qps 0, which the study
            # holds infeasible (`server_qps >= 1`), so its accuracy still counts (a server
            # study's baseline is often too slow for the bound) and the sampler learns from it.
            # It is recorded as a result like any other (one shape for the report and an
            # export's measurements.json), with why in its details.
            result = ServingResult(
                scenario=self.scenario.to_dict(), batcher=spec.batcher.to_dict(), server_qps=0.0,
                server_p99_ms=exc.lowest_p99_ms,
                details={"no_valid_qps": str(exc), "lowest_qps_tried": exc.lowest_qps, "runs": exc.runs},
            )
        scenario_metrics, serving = result.metrics(), result.to_dict()
        metrics = {
            **scenario_metrics,
            "accuracy": built.accuracy,
            "model_bytes": float(built.model_bytes),
            "peak_memory_bytes": float(peak_rss_bytes()),
            "build_s": built.build_s,
        }
        details: dict[str, Any] = {
            "scenario": self.scenario.to_dict(),
            "serving": serving,
            "batcher": spec.batcher.to_dict(),
            **_trial_details(spec, built, source, slot, slot.last_wait_s, reset, "serving"),
            "phases_s": {
                "build": round(phase_build, 4),
                "measure": round(time.perf_counter() - measured, 4),
                "total": round(time.perf_counter() - started, 4),
            },
        }
        return Measurement(metrics=metrics, details=details)

    def measure_pair(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> Measurement:
        """Time configs `a` and `b` in this process, interleaved window by window
        (`time_paired`), for an A/B comparison (`paretotune.workers.confirm.compare`).

        Both come from memory or the artifact cache when built before; their timings are made
        now. The metrics are `a`'s; the details hold, for each side ("a", "b"), its metrics
        and its per-window p50, p90, p99 (windows of >= 100 calls) and throughput, and
        "window_ratios" and "block_ratios" (b's p50 / a's p50 per window and per block pair).
        """
        if not isinstance(self.scenario, SingleStream):
            raise ConfigError(
                f"compare times configs in a closed loop (single_stream); this evaluator's scenario "
                f"is {self.scenario.kind}"
            )
        specs = (self._resolve(a), self._resolve(b))
        slots = [self._slot(spec.on_gpu) for spec in specs]
        import contextlib

        with contextlib.ExitStack() as held:
            for slot in dict.fromkeys(slots):
                held.enter_context(slot.shared())
            sides = []
            for spec in specs:
                built, cache_hit, _ = self._get_built(spec, self._build_key(spec))
                self._set_threads(spec.threads)
                runner = self._runner(built, spec.threads, spec)
                inputs = self._batch(spec.batch_size)
                timed = runner.prepare_timed(inputs) if hasattr(runner, "prepare_timed") else host_clock(runner.prepare(inputs))
                sides.append((spec, built, cache_hit, timed))
            (spec_a, built_a, hit_a, timed_a), (spec_b, built_b, hit_b, timed_b) = sides
            try:
                with contextlib.ExitStack() as timing:
                    for slot in dict.fromkeys(slots):
                        timing.enter_context(slot.exclusive())
                    paired = time_paired(
                        timed_b, timed_a, spec_b.batch_size, self.timing,
                        reference_batch_size=spec_a.batch_size,
                        before_candidate=lambda: self._set_threads(spec_b.threads),
                        before_reference=lambda: self._set_threads(spec_a.threads),
                    )
            except ParetotuneError:
                raise
            except Exception as exc:  # noqa: BLE001 - an engine failing to run fails the comparison
                raise EvaluationError(f"timing {spec_a.engine} against {spec_b.engine} failed: {exc}") from exc
        out: dict[str, Any] = {}
        for name, spec, built, hit, result in (
            ("a", spec_a, built_a, hit_a, paired.reference),
            ("b", spec_b, built_b, hit_b, paired.candidate[0]),
        ):
            out[name] = {
                **pair_side(result, accuracy=built.accuracy, model_bytes=float(built.model_bytes)),
                "artifact_source": hit,
                "cache_hit": hit != "built",
                "engine": spec.engine,
                "batch_size": spec.batch_size,
                "threads": spec.threads,
            }
        details = {
            **out,
            "window_ratios": [1.0 / r for r in paired.window_ratios],  # b / a per window
            "block_ratios": [1.0 / r for r in paired.ratios],  # b / a per block pair
            "timing": "paired: a and b interleaved window by window in this process",
            "timing_policy": self.timing.to_dict(),
            "hardware": hardware_fingerprint(spec_a.threads),
        }
        return Measurement(metrics=dict(out["a"]["metrics"]), details=details)

    def build_artifact(self, config: Mapping[str, Any]) -> BuiltArtifact:
        """The built artifact of `config`: from memory or the artifact cache, else built now."""
        spec = self._resolve(config)
        key = self._build_key(spec)
        built, source, _ = self._get_built(spec, key)
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
        return spec

    def _build_key(self, spec: BuildSpec) -> str:
        parts: list[Any] = [
            "build",
            CACHE_FORMAT,
            self.task.model_id(),
            self.task.data_id(),
            spec.build_dict(),
            library_versions(engines.get(spec.engine).packages),
        ]
        if spec.on_gpu:  # a GPU build depends on the GPU model and the GPU packages too
            from paretotune.evaluators.availability import gpu_build_identity

            parts.append(gpu_build_identity())
        return cache_key(*parts)

    # -- building --------------------------------------------------------------------------

    def _get_built(self, spec: BuildSpec, key: str) -> tuple[_Built, str, float]:
        """(the build, where it came from: one of ARTIFACT_SOURCES, seconds it took)."""
        started = time.perf_counter()
        if key in self._built:
            self._built.move_to_end(key)
            return self._built[key], "memory", time.perf_counter() - started
        built = self._from_disk(spec, key)
        source = "disk"
        if built is None:
            try:
                built = self._build(spec)
            except Exception as exc:  # any build crash fails the trial with its reason
                _reraise(exc, f"building {spec.engine} bit_width={spec.bit_width}")
            self.builds += 1
            meta = {
                "accuracy": built.accuracy,
                "model_bytes": built.model_bytes,
                "build_s": built.build_s,
                "details": built.details,
            }
            self.cache.put(key, meta, built.artifact)
            source = "built"
        self._built[key] = built
        while len(self._built) > self.memory_slots:
            self._built.popitem(last=False)
        return built, source, time.perf_counter() - started

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
        if engines.get(spec.engine).verify_on_load:
            try:
                self._runner(built, spec.threads, spec)
            except EvaluationError as exc:
                logger.warning("artifact cache entry %s: %s; building it again", key, exc)
                return None
        return built

    def _build(self, spec: BuildSpec) -> _Built:
        started = time.perf_counter()
        source = SpecSource(self.models, spec)
        made = engines.get(spec.engine).build(source, spec)
        details, model_bytes = source.details, made.model_bytes
        if "zeroed_weights" in details:  # unstructured sparsity: credit a bitmask encoding's size
            details["dense_model_bytes"] = model_bytes
            saved = (
                details["zeroed_weights"] * BYTES_PER_WEIGHT[spec.bit_width]
                - details["sparse_weights"] / 8
            )
            model_bytes = int(max(model_bytes - saved, 0))
        built = _Built(spec, made.artifact, float("nan"), model_bytes, 0.0, details)
        if made.runner is not None:
            built.runners[_runner_key(spec, 1)] = made.runner
        # at the trial's threads, as a cached artifact's runner is made: an option bounded by the
        # threads (OpenVINO's num_streams) would fail a fresh build at 1 and pass a cached one
        runner = self._runner(built, spec.threads, spec)
        if spec.torch_compile:  # compiling happens on the first call: part of the build
            runner.run(self.task.example_inputs)
        built.build_s = time.perf_counter() - started
        built.accuracy = self._accuracy(runner)
        return built

    def _runner(self, built: _Built, threads: int, spec: BuildSpec | None = None) -> Any:
        """The runner of `built` for `threads` and `spec`'s runtime options (default: the
        build's), made once; an engine whose runners ignore threads reuses any it has."""
        spec = spec or built.spec
        key = _runner_key(spec, threads)
        runner = built.runners.get(key)
        if runner is None and not engines.get(spec.engine).threads_per_runner:
            runner = next(iter(built.runners.values()), None)
        if runner is None:
            runner = self._instance_runner(built, threads, spec)
        built.runners[key] = runner
        return runner

    def _instance_runner(self, built: _Built, threads: int, spec: BuildSpec | None = None) -> Any:
        """A new runner of the built engine: one engine instance behind the dynamic batcher
        (its own session; the torch engines share their module, which inference does not
        change)."""
        spec = spec or built.spec
        sibling = next(iter(built.runners.values()), None)
        return engines.get(spec.engine).runner(
            built.artifact, spec, self.task, threads, cache=self.cache, sibling=sibling
        )

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

    def _reference_run(self, threads: int) -> Any:
        """The unmodified model's runner (torch eager fp32; ORT fp32 for .onnx tasks), made
        once per thread count: a runner may be kept, its timing never is."""
        runner = self._reference_runners.get(threads)
        if runner is None:
            runner = self._reference_runners[threads] = self._reference_runner(threads)
        return runner

    def _reference_slot(self, on_gpu: bool, needed: bool) -> Any:
        """The CPU slot, held exclusively too when a GPU trial is paired with its CPU
        reference (a CPU trial's own slot already is the CPU slot)."""
        import contextlib

        if not (needed and on_gpu):
            return contextlib.nullcontext()
        return self._slot(on_gpu=False).exclusive()

    def _reference_details(self, paired: PairedTiming | None) -> dict[str, Any]:
        """What the details say of `speedup`'s reference: timed beside the trial, or not at all."""
        engine = "onnxruntime" if self.task.is_onnx else "torch"
        if paired is None:
            return {"engine": engine, "bit_width": 32, "timing": "none (reference='none': no speedup)"}
        ref = paired.reference
        return {
            "engine": engine,
            "bit_width": 32,
            "timing": "paired: in this process, interleaved with the trial in alternating blocks of every window",
            "p50_ms": ref.p50_ms,
            "latency_p50_ms_ci": list(ref.intervals()["latency_p50_ms"]) if ref.n_samples >= 2 else None,
            "stable": ref.stable,
            "spread": round(ref.spread, 4),
            "n_samples": ref.n_samples,
            "window_p50_ms": [round(v, 5) for v in ref.window_p50_ms],
            "window_ratios": [round(v, 5) for v in paired.window_ratios],
            "ratio_spread": round(paired.ratio_spread, 4),
            "block_ratios": [round(v, 5) for v in paired.ratios],
        }

    def _batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """Fixed timing inputs at `batch_size`, the same for every engine (`Task.timing_batch`)."""
        return self.task.timing_batch(batch_size)


def _reraise(exc: Exception, what: str) -> NoReturn:
    """Our own errors as they are; any other crash as an EvaluationError naming ``what``."""
    if isinstance(exc, ParetotuneError):
        raise exc
    raise EvaluationError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def _trial_details(
    spec: BuildSpec, built: _Built, source: str, slot: TimingSlot, wait_s: float, reset: bool, phase: str
) -> dict[str, Any]:
    """What every measurement's details say about its build, machine and timing slot."""
    out: dict[str, Any] = {
        "artifact_source": source,  # one of ARTIFACT_SOURCES
        "cache_hit": source != "built",
        "engine": spec.engine,
        "build": spec.build_dict(),
        "threads": spec.threads,
        "build_details": built.details,
        "peak_memory": f"process VmHWM during {phase}" if reset else "process lifetime peak RSS",
        "timing_slot": {"path": slot.path, "wait_s": round(wait_s, 4)} if slot.enabled else None,
        "hardware": hardware_fingerprint(spec.threads),
    }
    if spec.ignored:
        out["ignored_keys"] = list(spec.ignored)
    return out


def _runner_key(spec: BuildSpec, threads: int) -> Any:
    """Runners are per thread count, and per runtime options for engines that have them."""
    return (threads, spec.runtime_options) if spec.runtime_options else threads


def _gpu_timing_details(runner: Any, compute: TimingResult) -> dict[str, Any]:
    """Compute-only latency (no host/device copies) beside the end-to-end metrics."""
    return {
        "timing_clock": getattr(runner, "timing_clock", "CUDA events"),
        "latency": "end to end: host-to-device copies, compute, device-to-host copies",
        "compute_latency_p50_ms": compute.p50_ms,
        "compute_latency_p90_ms": compute.p90_ms,
        "compute_latency_p99_ms": compute.p99_ms,
        "compute_stable": compute.stable,
        "compute_spread": round(compute.spread, 4),
    }
