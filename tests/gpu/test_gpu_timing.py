"""Device-timed engines: end-to-end and compute latency from one set of windows, reported
apart (the clocks are faked here; the real ones run in test_gpu_engines.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from paretotune.evaluators import Task, TaskEvaluator
from paretotune.evaluators.timing import time_samples

from _gpumodels import FAST, task_fixture  # noqa: F401 - the `task` fixture


def test_time_samples_reports_each_clock_over_the_same_windows() -> None:
    ticks = iter(range(10**6))

    def sample() -> tuple[float, float]:
        step = next(ticks) % 3  # 3 distinct latencies, compute is always 40% of end to end
        return 1.0 + step, 0.4 * (1.0 + step)

    end_to_end, compute = time_samples(sample, 4, FAST)
    assert end_to_end.n_samples == compute.n_samples
    assert end_to_end.windows == compute.windows
    assert compute.p50_ms == pytest.approx(0.4 * end_to_end.p50_ms)
    assert compute.p90_ms == pytest.approx(0.4 * end_to_end.p90_ms)
    assert end_to_end.throughput == compute.throughput  # wall clock, shared


class _DeviceTimedRunner:
    """Wraps a CPU runner the way a GPU runner looks to the evaluator."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        raise AssertionError("a device-timed runner is timed through prepare_timed")

    def prepare_timed(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], tuple[float, float]]:
        run = self.inner.prepare(inputs)

        def sample() -> tuple[float, float]:
            run()
            return 2.0, 0.5  # end to end, compute (ms)

        return sample

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.inner.run(inputs)


def test_the_evaluator_reports_compute_latency_beside_end_to_end(
    task: Task, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluator = TaskEvaluator(task, cache_dir=tmp_path, timing=FAST)
    original = TaskEvaluator._runner
    monkeypatch.setattr(
        TaskEvaluator, "_runner", lambda self, built, threads, spec=None: _DeviceTimedRunner(
            original(self, built, threads)
        )
    )
    measurement = evaluator({"engine": "torch", "batch_size": 4})
    assert measurement.metrics["latency_p50_ms"] == 2.0  # the end-to-end clock is the metric
    assert measurement.details["compute_latency_p50_ms"] == 0.5
    assert measurement.details["timing_clock"] == "CUDA events"
    assert "compute_latency_p50_ms" not in measurement.metrics
