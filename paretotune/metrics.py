"""The metric vocabulary: one set of names for evaluators, studies, the CLI and the report.

Evaluators measure (``speedup`` too: the unmodified model timed in the same process, paired);
the study derives ``accuracy_drop`` against the baseline and sets the baseline's ``speedup`` to 1;
workers add GPU telemetry where a GPU is present. Any of them can be an objective or a
constraint, and an unknown name is an error that lists these.
"""

from __future__ import annotations

import math

#: metric name -> its natural direction ("min" or "max") and what it means
METRICS: dict[str, tuple[str, str]] = {
    "latency_p50_ms": ("min", "median latency of one batch, end to end on the engine"),
    "latency_p90_ms": ("min", "90th percentile latency of one batch"),
    "latency_p99_ms": ("min", "99th percentile latency (only with >= 100 samples)"),
    "throughput": ("max", "samples per second at the trial's batch size"),
    "accuracy": ("max", "the task's metric, higher is better"),
    "accuracy_drop": ("min", "baseline accuracy minus accuracy"),
    "speedup": ("max", "the unmodified model's latency_p50 / latency_p50, timed in the same process (paired)"),
    "model_bytes": ("min", "size of the built artifact"),
    "peak_memory_bytes": ("min", "peak resident memory while measuring"),
    "build_s": ("min", "seconds to build the artifact"),
    "gpu_memory_bytes": ("min", "GPU memory used while measuring"),
    "gpu_util": ("max", "GPU utilization while measuring, percent"),
    "power_w": ("min", "GPU power draw while measuring, watts"),
    "server_qps": ("max", "server scenario: the highest LoadGen-VALID QPS at the p99 bound"),
    "server_p99_ms": ("min", "server scenario: LoadGen's p99 latency at server_qps"),
    "offline_qps": ("max", "offline scenario: LoadGen's samples per second, every query queued"),
}
#: metrics only one kind of scenario measures: a closed loop of batches (single_stream) or
#: LoadGen's scenarios; naming one under another scenario is refused at creation
SCENARIO_METRICS: dict[str, tuple[str, ...]] = {
    "single_stream": ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput", "speedup"),
    "server": ("server_qps", "server_p99_ms"),
    "offline": ("offline_qps",),
}
#: returned by evaluators for the controller's derived metrics; not an objective by itself
HELPER_METRICS = ("baseline_latency_p50_ms",)
#: the inclusive range each built-in metric can take; a measurement outside it is a FAIL
#: (a trial reporting -5 ms must not take the front). `accuracy` takes the study's
#: accuracy range instead (default DEFAULT_ACCURACY_RANGE); derived metrics are not checked.
METRIC_DOMAINS: dict[str, tuple[float, float]] = {
    **{m: (0.0, math.inf) for m in (
        "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput", "model_bytes",
        "peak_memory_bytes", "build_s", "gpu_memory_bytes", "power_w", "baseline_latency_p50_ms",
        "server_qps", "server_p99_ms", "offline_qps",
    )},
    "gpu_util": (0.0, 100.0),
}
DEFAULT_ACCURACY_RANGE = (0.0, 1.0)
#: metrics the study computes from the baseline's (never returned by an evaluator); `speedup`
#: is measured by the evaluator, paired (BENCHMARKING.md rule 10), and is 1 for the baseline
DERIVED_METRICS = ("accuracy_drop",)
#: metrics the workers sample from the GPU while a trial runs (pynvml)
TELEMETRY_METRICS = ("gpu_memory_bytes", "gpu_util", "power_w")
#: what an evaluator returns under a single-stream scenario (LoadGen's scenarios return theirs
#: in SCENARIO_METRICS instead of the closed-loop timings)
MEASURED_METRICS: tuple[str, ...] = tuple(
    m for m in METRICS
    if m not in DERIVED_METRICS and m not in TELEMETRY_METRICS
    and not any(m in SCENARIO_METRICS[kind] for kind in ("server", "offline"))
) + HELPER_METRICS
