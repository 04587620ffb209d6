"""The timing harness: warm-up, windows until stable, percentiles (docs: BENCHMARKING.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from paretotune.errors import ConfigError


@dataclass(frozen=True)
class TimingPolicy:
    """How long to time one configuration.

    A window runs at least `min_window_iters` iterations and at least `min_window_ms`
    milliseconds, whichever is longer. The measurement is stable when max/min of the last
    `stable_windows` windows' p50 is at most `max_spread`; after `max_windows` windows it gives
    up and reports stable=False with the spread.
    """

    warmup_iters: int = 5
    min_window_iters: int = 10
    min_window_ms: float = 100.0
    stable_windows: int = 3
    max_windows: int = 8
    max_spread: float = 1.10

    def __post_init__(self) -> None:
        for name in ("warmup_iters", "min_window_iters", "stable_windows", "max_windows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "warmup_iters" else 1):
                raise ConfigError(f"TimingPolicy.{name} must be a positive int, got {value!r}")
        if self.max_windows < self.stable_windows:
            raise ConfigError(
                f"TimingPolicy.max_windows must be >= stable_windows ({self.stable_windows}), "
                f"got {self.max_windows}"
            )
        if not self.min_window_ms >= 0:
            raise ConfigError(f"TimingPolicy.min_window_ms must be >= 0, got {self.min_window_ms}")
        if not self.max_spread >= 1.0:
            raise ConfigError(f"TimingPolicy.max_spread must be >= 1.0, got {self.max_spread}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TimingResult:
    """Per-batch latencies of the last `stable_windows` windows and what they mean."""

    p50_ms: float
    p90_ms: float
    p99_ms: float | None  # only with >= 100 samples
    throughput: float  # samples per second of wall time over the reported windows
    stable: bool
    spread: float  # max/min of the reported windows' p50
    n_samples: int
    windows: int
    window_p50_ms: list[float]
    measure_s: float

    def details(self) -> dict[str, Any]:
        return {
            "stable": self.stable,
            "spread": round(self.spread, 4),
            "n_samples": self.n_samples,
            "windows": self.windows,
            "window_p50_ms": [round(v, 5) for v in self.window_p50_ms],
            "extended": self.windows > len(self.window_p50_ms),
            "gave_up": not self.stable,
        }


MIN_SAMPLES_FOR_P99 = 100


def time_callable(run: Callable[[], object], batch_size: int, policy: TimingPolicy) -> TimingResult:
    """Time `run` (one synchronous batch) with `policy`, using `time.perf_counter_ns`."""

    def sample() -> tuple[float]:
        t0 = time.perf_counter_ns()
        run()
        return ((time.perf_counter_ns() - t0) / 1e6,)

    return time_samples(sample, batch_size, policy)[0]


def time_samples(
    sample: Callable[[], Sequence[float]], batch_size: int, policy: TimingPolicy
) -> tuple[TimingResult, ...]:
    """Time a batch that measures itself: `sample()` runs one batch and returns its latencies
    in ms, one or more clocks (a GPU engine gives end-to-end and compute-only latency from
    CUDA events). The first clock decides stability; every clock gets a result over the same
    windows. Windows and throughput use the host clock (`sample` must synchronize)."""
    start_all = time.perf_counter()
    for _ in range(policy.warmup_iters):
        sample()
    windows: list[tuple[np.ndarray, float]] = []  # (latencies in ms per clock, wall seconds)
    min_window_ns = policy.min_window_ms * 1e6
    stable = False
    while len(windows) < policy.max_windows:
        samples: list[Sequence[float]] = []
        window_start = time.perf_counter_ns()
        while True:
            samples.append(sample())
            now = time.perf_counter_ns()
            if len(samples) >= policy.min_window_iters and now - window_start >= min_window_ns:
                break
        wall_s = (time.perf_counter_ns() - window_start) / 1e9
        windows.append((np.asarray(samples, dtype=np.float64).reshape(len(samples), -1), wall_s))
        if len(windows) >= policy.stable_windows:
            p50s = [float(np.median(w[:, 0])) for w, _ in windows[-policy.stable_windows :]]
            if max(p50s) / max(min(p50s), 1e-12) <= policy.max_spread:
                stable = True
                break
    kept = windows[-policy.stable_windows :]
    wall = sum(s for _, s in kept)
    measure_s = time.perf_counter() - start_all
    results = []
    for clock in range(kept[0][0].shape[1]):
        window_p50 = [float(np.median(w[:, clock])) for w, _ in kept]
        latencies = np.concatenate([w[:, clock] for w, _ in kept])
        n = int(latencies.size)
        results.append(
            TimingResult(
                p50_ms=float(np.percentile(latencies, 50)),
                p90_ms=float(np.percentile(latencies, 90)),
                p99_ms=float(np.percentile(latencies, 99)) if n >= MIN_SAMPLES_FOR_P99 else None,
                throughput=batch_size * n / wall if wall > 0 else 0.0,
                stable=stable,
                spread=max(window_p50) / max(min(window_p50), 1e-12),
                n_samples=n,
                windows=len(windows),
                window_p50_ms=window_p50,
                measure_s=measure_s,
            )
        )
    return tuple(results)
