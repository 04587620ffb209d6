"""The timing harness: stability, giving up, the p99 sample rule, paired speedups, intervals."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import paretotune as pt
from paretotune.evaluators import Task, TaskEvaluator
from paretotune.evaluators.timing import (
    MIN_SAMPLES_FOR_P99,
    TimingPolicy,
    bootstrap_intervals,
    time_callable,
)
from paretotune.search.stats import order_statistic_interval

from _evmodels import PERTURBER, SleepingRunner, write_factor


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_drifting_run_gives_up_unstable_with_its_spread() -> None:
    calls = [0]

    def run() -> None:  # every call is slower than the last: windows never agree
        calls[0] += 1
        _busy(calls[0] * 2e-5)

    policy = TimingPolicy(
        warmup_iters=0, min_window_iters=5, min_window_ms=0.0, stable_windows=3, max_windows=5
    )
    result = time_callable(run, 1, policy)
    assert not result.stable and result.details()["gave_up"]
    assert result.windows == 5 and result.spread > 1.1
    assert result.n_samples == 15  # the last three windows are reported


def test_p99_needs_enough_samples() -> None:
    few = TimingPolicy(warmup_iters=0, min_window_iters=10, min_window_ms=0.0, max_windows=3)
    many = TimingPolicy(warmup_iters=0, min_window_iters=40, min_window_ms=0.0, max_windows=3)
    assert time_callable(lambda: None, 1, few).p99_ms is None
    result = time_callable(lambda: None, 1, many)
    assert result.n_samples >= MIN_SAMPLES_FOR_P99 and result.p99_ms is not None
    assert result.p50_ms <= result.p90_ms <= result.p99_ms


def test_throughput_counts_samples_at_the_batch_size() -> None:
    policy = TimingPolicy(warmup_iters=0, min_window_iters=5, min_window_ms=0.0, max_windows=3)
    one = time_callable(lambda: _busy(2e-4), 1, policy)
    assert one.throughput > 0
    # throughput is samples / wall time: at batch 8 each call carries 8 samples
    eight = time_callable(lambda: _busy(2e-4), 8, policy)
    assert eight.throughput > 2 * one.throughput


# -- paired speedup (BENCHMARKING.md rule 10) -----------------------------------------------------

PAIRED = TimingPolicy(warmup_iters=1, min_window_iters=3, min_window_ms=0.0, stable_windows=9, max_windows=9)


class SleepyEvaluator(TaskEvaluator):
    """The real evaluator and timing harness over fake engines that wait: every trial's engine
    takes `candidate_ms`, the unmodified reference `reference_ms` (times a shared factor)."""

    def __init__(self, *args: Any, candidate_ms: float, reference_ms: float,
                 factor_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, exclusive_timing=False, **kwargs)
        self.candidate_ms, self.reference_ms, self.factor_file = candidate_ms, reference_ms, factor_file

    def _runner(self, built: Any, threads: int, spec: Any = None) -> Any:
        return SleepingRunner(super()._runner(built, threads, spec), self.candidate_ms, self.factor_file)

    def _reference_runner(self, threads: int) -> Any:
        return SleepingRunner(super()._reference_runner(threads), self.reference_ms, self.factor_file)


def test_paired_speedup_cancels_a_slowdown_that_an_earlier_reference_timing_does_not(
    tiny_task: Task, tmp_path: Path
) -> None:
    factor = str(tmp_path / "factor")
    write_factor(factor, 1.0)
    evaluator = SleepyEvaluator(tiny_task, tmp_path / "cache", timing=PAIRED,
                                candidate_ms=6.0, reference_ms=3.0, factor_file=factor)
    # the old way: the reference timed once, before (what the artifact cache used to serve)
    earlier = time_callable(evaluator._reference_runner(1).prepare({}), 1, PAIRED)
    background = subprocess.Popen([sys.executable, "-c", PERTURBER, factor, "0.75", "2.5", "1.5"])
    try:
        time.sleep(0.1)  # the slowdown has started
        m = evaluator({"engine": "torch", "batch_size": 1, "threads": 1})
    finally:
        background.kill()
        background.wait()
    assert m.metrics["speedup"] == pytest.approx(0.5, rel=0.02)
    low, high = m.details["speedup_ci"]
    assert low <= m.metrics["speedup"] <= high
    assert m.details["baseline"]["timing"].startswith("paired")
    # the candidate's own p50 moved with the slowdown, so an unpaired ratio is far from 0.5
    assert m.metrics["latency_p50_ms"] > 1.3 * 6.0
    assert earlier.p50_ms / m.metrics["latency_p50_ms"] < 0.4


def test_a_second_study_on_the_machine_times_its_own_reference(tiny_task: Task, tmp_path: Path) -> None:
    space = pt.SearchSpace({"engine": pt.Choice(["torch", "onnxruntime"]), "threads": pt.Choice([1])})
    url = f"sqlite:///{tmp_path}/s.db"
    speedups = []
    # the same machine, the same artifact cache, the same model; the reference runs at 2 ms in
    # the first study and at 8 ms in the second (a cached reference would give both 0.5)
    for name, reference_ms in (("first", 2.0), ("second", 8.0)):
        study = pt.create_study(name, url, space=space, objectives={"speedup": "max", "accuracy": "max"},
                                warm_start="none")
        study.enqueue({"engine": "onnxruntime"})
        evaluator = SleepyEvaluator(tiny_task, tmp_path / "cache", timing=FAST_PAIRED,
                                    candidate_ms=4.0, reference_ms=reference_ms)
        for _ in range(2):  # the baseline, then onnxruntime
            pending = study.ask()
            m = evaluator(pending.config)
            trial = study.tell(pending, m.metrics, m.details)
        speedups.append(trial.metrics["speedup"])
        assert study.trials[0].metrics["speedup"] == 1.0  # the baseline against itself
    assert speedups[0] == pytest.approx(0.5, rel=0.1) and speedups[1] == pytest.approx(2.0, rel=0.1)


FAST_PAIRED = TimingPolicy(warmup_iters=1, min_window_iters=3, min_window_ms=0.0, stable_windows=3, max_windows=3)


def test_the_baseline_trials_speedup_is_one(tiny_task: Task, tmp_path: Path) -> None:
    space = pt.SearchSpace({"engine": pt.Choice(["torch", "onnxruntime"]), "batch_size": pt.Choice([1, 4])})
    study = pt.create_study("b", f"sqlite:///{tmp_path}/b.db", space=space,
                            objectives={"speedup": "max", "latency_p50_ms": "min"}, warm_start="none")
    evaluator = TaskEvaluator(tiny_task, tmp_path / "cache", timing=FAST_PAIRED)
    pending = study.ask()
    assert pending.is_baseline
    m = evaluator(pending.config)
    trial = study.tell(pending, m.metrics, m.details)
    # measured against the reference beside it, it came out near 1; recorded, it is 1
    assert "speedup" in m.metrics and m.details["baseline"]["window_ratios"]
    assert trial.metrics["speedup"] == 1.0 and study.trial(0).metrics["speedup"] == 1.0
    assert study.trial(0).intervals["speedup"] == (1.0, 1.0)
    lo, hi = study.trial(0).intervals["latency_p50_ms"]
    assert lo <= trial.metrics["latency_p50_ms"] <= hi


# -- intervals (rule 11) ----------------------------------------------------------------------------

def test_bootstrap_intervals_cover_the_true_median_about_95_percent_of_the_time() -> None:
    mu, sigma, n, runs = 0.0, 0.25, 200, 200
    true_median = float(np.exp(mu))
    rng = np.random.default_rng(1234)
    covered = 0
    for seed in range(runs):
        samples = rng.lognormal(mu, sigma, n)
        lo, hi = bootstrap_intervals(samples, seed=seed)["latency_p50_ms"]
        covered += lo <= true_median <= hi
    # binomial(200, 0.95): 3 standard deviations are +-4.6 points
    assert 0.90 <= covered / runs <= 0.99, covered


def test_intervals_are_what_the_samples_allow() -> None:
    policy = TimingPolicy(warmup_iters=0, min_window_iters=40, min_window_ms=0.0, max_windows=3)
    result = time_callable(lambda: _busy(2e-4), 4, policy)
    ci = result.intervals()
    assert set(ci) == {"latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput"}
    for metric, value in (("latency_p50_ms", result.p50_ms), ("latency_p90_ms", result.p90_ms),
                          ("latency_p99_ms", result.p99_ms), ("throughput", result.throughput)):
        lo, hi = ci[metric]
        assert lo <= hi
        assert lo * 0.999 <= value <= hi * 1.001, (metric, value, ci[metric])
    few = bootstrap_intervals(np.linspace(1.0, 2.0, 50))
    assert "latency_p99_ms" not in few  # p99 needs >= 100 samples, its interval too
    assert bootstrap_intervals([1.0, 1.0, 1.0])["latency_p50_ms"] == (1.0, 1.0)
    assert bootstrap_intervals([1.0]) == {}
    assert result.intervals() == ci  # seeded: the same samples give the same interval


def test_the_interval_over_processes_states_its_coverage() -> None:
    lo, hi, coverage = order_statistic_interval([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (lo, hi) == (1.0, 5.0) and coverage == pytest.approx(1 - 2 / 32)  # 5 values: 93.75%
    lo, hi, coverage = order_statistic_interval(list(range(20)))
    assert coverage >= 0.95 and 0 < lo < hi < 19
    assert order_statistic_interval([1.0]) is None


def test_measure_pair_times_two_configs_side_by_side(tiny_evaluator: TaskEvaluator) -> None:
    a, b = {"engine": "torch", "batch_size": 1}, {"engine": "onnxruntime", "batch_size": 4, "threads": 2}
    m = tiny_evaluator.measure_pair(a, b)
    da, db = m.details["a"], m.details["b"]
    assert m.metrics == da["metrics"] and da["engine"] == "torch" and db["engine"] == "onnxruntime"
    assert db["batch_size"] == 4 and db["threads"] == 2
    windows = len(da["windows"]["latency_p50_ms"])
    assert windows == len(db["windows"]["latency_p50_ms"]) == len(m.details["window_ratios"]) == 3
    ratios = [y / x for x, y in zip(da["windows"]["latency_p50_ms"], db["windows"]["latency_p50_ms"], strict=True)]
    assert m.details["window_ratios"] == pytest.approx(ratios)
    again = tiny_evaluator.measure_pair(a, b)  # built once; timed again
    assert again.details["a"]["artifact_source"] == again.details["b"]["artifact_source"] == "memory"
    assert again.details["a"]["windows"] != da["windows"]
