"""The timing harness: stability, giving up, and the p99 sample rule."""

from __future__ import annotations

import time

from paretotune.evaluators.timing import MIN_SAMPLES_FOR_P99, TimingPolicy, time_callable


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
