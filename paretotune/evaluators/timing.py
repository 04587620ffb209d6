"""The timing harness: warm-up, windows until stable, percentiles, intervals (BENCHMARKING.md).

`time_callable` / `time_samples` time one thing. `time_paired` times a candidate and a
reference in the same process, interleaved (alternating blocks inside every window), so a
slowdown that hits both (another tenant, a frequency drop) cancels in their ratio: the paired
`speedup` is the median of the per-block ratios (rule 10). Every result keeps the per-call samples of its reported
windows, from which `TimingResult.intervals` gives percentile-bootstrap intervals (rule 11).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
    #: paired timing alternates the two sides in blocks of at least this many ms (and one
    #: call) inside each window, so both see the same moments of a shared machine
    pair_block_ms: float = 10.0

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
        if not self.pair_block_ms >= 0:
            raise ConfigError(f"TimingPolicy.pair_block_ms must be >= 0, got {self.pair_block_ms}")
        if not self.max_spread >= 1.0:
            raise ConfigError(f"TimingPolicy.max_spread must be >= 1.0, got {self.max_spread}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_SAMPLES_FOR_P99 = 100
#: the confidence level of every interval the harness reports
CI_LEVEL = 0.95
#: bootstrap resamples per interval (percentile method)
BOOTSTRAP_RESAMPLES = 1000
#: how the intervals are made, as the details state it
CI_METHOD = (
    f"percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples) over the per-call samples of the "
    "reported windows, within this process"
)



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
    #: the per-call latencies (ms) of the reported windows, one array per window
    window_samples_ms: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)
    #: wall seconds of each reported window (throughput's denominator)
    window_wall_s: tuple[float, ...] = field(default=(), repr=False, compare=False)
    batch_size: int = 1

    @property
    def samples_ms(self) -> np.ndarray:
        """Every per-call latency of the reported windows (ms), in order."""
        if not self.window_samples_ms:
            return np.zeros(0)
        return np.concatenate(self.window_samples_ms)

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

    def intervals(self, level: float = CI_LEVEL, seed: int = 0) -> dict[str, tuple[float, float]]:
        """Bootstrap `level` intervals of p50, p90, p99 (with >= 100 samples) and throughput,
        by metric name (`bootstrap_intervals`). Compute it outside a timed window: it takes
        a fraction of a second."""
        return bootstrap_intervals(
            self.samples_ms, batch_size=self.batch_size, wall_s=sum(self.window_wall_s), level=level, seed=seed
        )


def bootstrap_intervals(
    samples_ms: Sequence[float] | np.ndarray,
    *,
    batch_size: int = 1,
    wall_s: float | None = None,
    level: float = CI_LEVEL,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals (scipy.stats.bootstrap) of a timing's percentiles and
    throughput from its per-call samples.

    Throughput is samples / wall time; a resample's throughput is ``batch_size / mean`` of
    its latencies, scaled by the measured wall time over the summed latencies (the harness's
    own overhead between calls, constant across resamples). Seeded: the same samples always
    give the same interval. Calls inside one process are not independent, so this is the
    process's interval; `confirm` gives the interval over fresh processes.
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray(samples_ms, dtype=np.float64).ravel()
    if x.size < 2:
        return {}
    with_p99 = x.size >= MIN_SAMPLES_FOR_P99
    total_ms = float(x.sum())
    overhead = (wall_s * 1e3 / total_ms) if wall_s and total_ms > 0 else 1.0

    def statistic(a: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = [np.percentile(a, 50, axis=axis), np.percentile(a, 90, axis=axis)]
        if with_p99:
            rows.append(np.percentile(a, 99, axis=axis))
        rows.append(batch_size * 1e3 / (np.mean(a, axis=axis) * overhead))
        return np.stack(rows)

    if np.all(x == x[0]):  # no variation: the interval is the point (bootstrap would warn)
        point = statistic(x[None, :])[:, 0]
        low = high = point
    else:
        result = stats.bootstrap(
            (x,), statistic, n_resamples=resamples, confidence_level=level, method="percentile",
            rng=np.random.default_rng(seed), vectorized=True, batch=max(1, 2_000_000 // x.size),
        )
        low, high = result.confidence_interval.low, result.confidence_interval.high
    names = ["latency_p50_ms", "latency_p90_ms", *(["latency_p99_ms"] if with_p99 else []), "throughput"]
    return {n: (float(lo), float(hi)) for n, lo, hi in zip(names, low, high, strict=True)}


def _host_clock(run: Callable[[], object]) -> Callable[[], tuple[float]]:
    def sample() -> tuple[float]:
        t0 = time.perf_counter_ns()
        run()
        return ((time.perf_counter_ns() - t0) / 1e6,)

    return sample


def time_callable(run: Callable[[], object], batch_size: int, policy: TimingPolicy) -> TimingResult:
    """Time `run` (one synchronous batch) with `policy`, using `time.perf_counter_ns`."""
    return time_samples(_host_clock(run), batch_size, policy)[0]


_Window = tuple[np.ndarray, float]  # (latencies in ms, one column per clock; wall seconds)


def _window(sample: Callable[[], Sequence[float]], policy: TimingPolicy) -> _Window:
    samples: list[Sequence[float]] = []
    min_window_ns = policy.min_window_ms * 1e6
    window_start = time.perf_counter_ns()
    while True:
        samples.append(sample())
        now = time.perf_counter_ns()
        if len(samples) >= policy.min_window_iters and now - window_start >= min_window_ns:
            break
    wall_s = (time.perf_counter_ns() - window_start) / 1e9
    return np.asarray(samples, dtype=np.float64).reshape(len(samples), -1), wall_s


def _stable(windows: list[_Window], policy: TimingPolicy) -> bool:
    if len(windows) < policy.stable_windows:
        return False
    p50s = [float(np.median(w[:, 0])) for w, _ in windows[-policy.stable_windows :]]
    return max(p50s) / max(min(p50s), 1e-12) <= policy.max_spread


def _results(
    windows: list[_Window], batch_size: int, policy: TimingPolicy, stable: bool, measure_s: float
) -> tuple[TimingResult, ...]:
    kept = windows[-policy.stable_windows :]
    wall = sum(s for _, s in kept)
    results = []
    for clock in range(kept[0][0].shape[1]):
        window_p50 = [float(np.median(w[:, clock])) for w, _ in kept]
        per_window = tuple(w[:, clock].copy() for w, _ in kept)
        latencies = np.concatenate(per_window)
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
                window_samples_ms=per_window,
                window_wall_s=tuple(s for _, s in kept),
                batch_size=batch_size,
            )
        )
    return tuple(results)


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
    windows: list[_Window] = []
    stable = False
    while len(windows) < policy.max_windows:
        windows.append(_window(sample, policy))
        if _stable(windows, policy):
            stable = True
            break
    return _results(windows, batch_size, policy, stable, time.perf_counter() - start_all)


@dataclass(frozen=True)
class PairedTiming:
    """A candidate and its reference timed in one process, interleaved.

    `candidate` has one result per clock of the candidate's sample (the first is end to end);
    `ratios` are reference p50 / candidate p50 of each block pair of the reported windows
    (blocks of `TimingPolicy.pair_block_ms`, alternating inside each window), and `speedup`
    their median (> 1: the candidate is faster); `window_ratios` are the same per window.
    """

    candidate: tuple[TimingResult, ...]
    reference: TimingResult
    ratios: list[float]
    speedup: float
    window_ratios: list[float] = field(default_factory=list)

    @property
    def ratio_spread(self) -> float:
        """max/min of the per-window ratios."""
        values = self.window_ratios or self.ratios
        return max(values) / max(min(values), 1e-12)

    def speedup_interval(
        self, level: float = CI_LEVEL, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
    ) -> tuple[float, float]:
        """A percentile-bootstrap interval (scipy.stats.bootstrap) of `speedup`, the median of
        the block ratios, resampling the blocks."""
        from scipy import stats

        x = np.asarray(self.ratios, dtype=np.float64)
        if x.size < 2 or np.all(x == x[0]):
            return self.speedup, self.speedup
        result = stats.bootstrap(
            (x,), np.median, n_resamples=resamples, confidence_level=level, method="percentile",
            rng=np.random.default_rng(seed), vectorized=True,
        )
        return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _paired_window(
    sides: tuple[Callable[[], Sequence[float]], Callable[[], Sequence[float]]],
    befores: tuple[Callable[[], None] | None, Callable[[], None] | None],
    policy: TimingPolicy,
    flip: bool,
) -> tuple[_Window, _Window, list[float]]:
    """One window of each side, made of alternating blocks (A B, B A, ...); each side's window
    ends as `policy` says, counting only its own calls and time. Returns both windows and the
    reference / candidate p50 ratio of each block pair."""
    samples: tuple[list[Sequence[float]], list[Sequence[float]]] = ([], [])
    walls = [0, 0]  # ns of each side's own blocks
    ratios: list[float] = []
    block_ns = policy.pair_block_ms * 1e6
    min_window_ns = policy.min_window_ms * 1e6

    def done(i: int) -> bool:
        return len(samples[i]) >= policy.min_window_iters and walls[i] >= min_window_ns

    k = 0
    while not (done(0) and done(1)):
        p50s = [0.0, 0.0]
        for i in ((0, 1) if (k % 2 == 0) != flip else (1, 0)):
            before = befores[i]
            if before is not None:
                before()
            block: list[Sequence[float]] = []
            start = time.perf_counter_ns()
            while True:
                block.append(sides[i]())
                if time.perf_counter_ns() - start >= block_ns:
                    break
            walls[i] += time.perf_counter_ns() - start
            samples[i].extend(block)
            p50s[i] = float(np.median([b[0] for b in block]))
        ratios.append(p50s[1] / max(p50s[0], 1e-12))
        k += 1
    windows = tuple(
        (np.asarray(samples[i], dtype=np.float64).reshape(len(samples[i]), -1), walls[i] / 1e9) for i in (0, 1)
    )
    return windows[0], windows[1], ratios


def time_paired(
    candidate: Callable[[], Sequence[float]],
    reference: Callable[[], Sequence[float]],
    batch_size: int,
    policy: TimingPolicy,
    *,
    reference_batch_size: int | None = None,
    before_candidate: Callable[[], None] | None = None,
    before_reference: Callable[[], None] | None = None,
) -> PairedTiming:
    """Time `candidate` and `reference` (sample functions, as `time_samples` takes) side by
    side: both warm up, then each window of the policy is run for both at once, alternating
    blocks of `policy.pair_block_ms` (A B, B A, A B, ...: the order flips each block pair, so a
    steady drift favours neither), and each side's window ends as `policy` says, counting its
    own calls and time. It is stable when the last `stable_windows` windows of each are;
    otherwise it gives up after `max_windows`. Both results cover the same windows.
    `before_candidate` / `before_reference` run before each of that side's blocks, untimed
    (setting a thread count that differs between them); `reference_batch_size` is the
    reference's, for its throughput (default `batch_size`)."""
    start_all = time.perf_counter()
    befores = (before_candidate, before_reference)
    for fn, before in ((candidate, before_candidate), (reference, before_reference)):
        if before is not None:
            before()
        for _ in range(policy.warmup_iters):
            fn()
    cand: list[_Window] = []
    ref: list[_Window] = []
    block_ratios: list[list[float]] = []
    stable = False
    while len(cand) < policy.max_windows:
        c, r, ratios = _paired_window((candidate, reference), befores, policy, flip=len(cand) % 2 == 1)
        cand.append(c)
        ref.append(r)
        block_ratios.append(ratios)
        if _stable(cand, policy) and _stable(ref, policy):
            stable = True
            break
    measure_s = time.perf_counter() - start_all
    candidate_results = _results(cand, batch_size, policy, stable, measure_s)
    (reference_result,) = _results(ref, reference_batch_size or batch_size, policy, stable, measure_s)[:1]
    window_ratios = [
        r / max(c, 1e-12)
        for r, c in zip(reference_result.window_p50_ms, candidate_results[0].window_p50_ms, strict=True)
    ]
    kept = [x for ratios in block_ratios[-policy.stable_windows :] for x in ratios]
    return PairedTiming(candidate_results, reference_result, kept, float(np.median(kept)), window_ratios)


def timing_metrics(result: TimingResult) -> dict[str, float]:
    """A result's metrics by name: p50, p90, throughput and (with >= 100 samples) p99."""
    metrics = {"latency_p50_ms": result.p50_ms, "latency_p90_ms": result.p90_ms, "throughput": result.throughput}
    if result.p99_ms is not None:
        metrics["latency_p99_ms"] = result.p99_ms
    return metrics


def window_values(result: TimingResult) -> dict[str, list[float]]:
    """Each reported window's p50, p90, throughput and (windows of >= 100 calls) p99: the
    values an A/B test ranks (`paretotune.search.comparisons`)."""
    out: dict[str, list[float]] = {"latency_p50_ms": [], "latency_p90_ms": [], "throughput": []}
    for w, wall in zip(result.window_samples_ms, result.window_wall_s, strict=True):
        out["latency_p50_ms"].append(float(np.percentile(w, 50)))
        out["latency_p90_ms"].append(float(np.percentile(w, 90)))
        out["throughput"].append(result.batch_size * w.size / wall if wall > 0 else 0.0)
    if result.window_samples_ms and all(w.size >= MIN_SAMPLES_FOR_P99 for w in result.window_samples_ms):
        out["latency_p99_ms"] = [float(np.percentile(w, 99)) for w in result.window_samples_ms]
    return out


def pair_side(result: TimingResult, **metrics: float) -> dict[str, Any]:
    """One side of an A/B measurement's details: its metrics (timings plus `metrics`), its
    per-window values, sample count and stability."""
    return {
        "metrics": {**timing_metrics(result), **metrics},
        "windows": window_values(result),
        "n_samples": result.n_samples,
        "stable": result.stable,
    }
