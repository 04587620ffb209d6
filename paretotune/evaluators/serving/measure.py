"""`measure_serving`: what a deployed server sustains, found with LoadGen inside a time budget.

Server: a short Offline probe sizes the search, then the target QPS is bisected (geometrically)
over PerformanceOnly Server runs until the highest VALID QPS is bracketed within the scenario's
tolerance or the budget runs out. VALID is LoadGen's verdict: p99 within the bound *and* its
early-stopping test (99% confidence that at most 1% of queries exceeded the bound), so short
runs are judged more strictly than the bare p99, never more loosely. Offline: a probe, then one
timed run sized to the budget.

The caller holds the machine's exclusive timing slot for the whole call: a serving run uses
every core (engine instances, the batcher and LoadGen's issue thread).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paretotune.errors import ConfigError, EvaluationError, ParetotuneError
from paretotune.evaluators.serving.batcher import BatcherConfig, Runner
from paretotune.evaluators.serving.harness import (
    MLPERF_MIN_DURATION_S,
    LoadGenRun,
    LoadGenSession,
    loadgen_version,
)
from paretotune.space.scenario import Offline, Scenario, Server, scenario_from_dict

logger = logging.getLogger(__name__)

# LoadGen's early stopping cannot pass a p99 bound on fewer than 459 queries, even with none
# over the bound; 500 leaves room for a few that are.
MIN_QUERIES = 500
MIN_RUN_S = 1.0
MAX_RUN_S = 10.0
RUNS_PER_BUDGET = 10  # a server search takes a probe and about 6-8 runs
DESCEND = 3.0  # factor down from an INVALID QPS while none is VALID yet
OFFLINE_HEADROOM = 1.5  # Offline runs are sized for this multiple of the measured rate
ASCEND = 1.5  # factor up from a VALID QPS that the probe's estimate did not bound
VALIDITY = (
    "VALID is LoadGen's verdict: p99 latency within the bound and its early-stopping test "
    "passed (99% confidence that at most 1% of queries exceeded the bound)"
)


class NoValidQPS(EvaluationError):
    """LoadGen judged every target QPS the search tried INVALID: the config sustains no load
    it could measure within the p99 bound (down to `lowest_qps`). The evaluator records that as
    a measured `server_qps` of 0 (infeasible), so the study keeps the config's accuracy and the
    sampler learns to avoid it; `measure_serving` itself raises it."""

    def __init__(self, message: str, lowest_qps: float, lowest_p99_ms: float | None, runs: int) -> None:
        super().__init__(message)
        self.lowest_qps = lowest_qps
        self.lowest_p99_ms = lowest_p99_ms
        self.runs = runs


@dataclass(frozen=True)
class ServingResult:
    """The scenario's metrics (`server_qps`, `server_p99_ms` or `offline_qps`) and how they were got.

    `details` holds what a reader needs to trust the numbers: the search's bracket and whether
    it converged, the run at the reported QPS (LoadGen's percentiles, query count, the mean
    formed batch size, the share of latency spent queueing), the durations and query counts
    used, with a plain statement that they are shorter than MLPerf's, and every run tried.
    """

    scenario: dict[str, Any]
    batcher: dict[str, Any]
    server_qps: float | None = None
    server_p99_ms: float | None = None
    offline_qps: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    runs: tuple[LoadGenRun, ...] = ()

    def metrics(self) -> dict[str, float]:
        """The metric vocabulary's names this result fills in."""
        values = {
            "server_qps": self.server_qps,
            "server_p99_ms": self.server_p99_ms,
            "offline_qps": self.offline_qps,
        }
        return {k: float(v) for k, v in values.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "batcher": self.batcher,
            "metrics": self.metrics(),
            "details": self.details,
        }


def _run_summary(run: LoadGenRun) -> dict[str, Any]:
    return {
        "target_qps": round(run.target_qps, 3),
        "valid": run.valid,
        "p99_ms": run.p99_ms,
        "query_count": run.query_count,
        "overlatency_count": run.overlatency_count,
        "early_stopping_met": run.early_stopping_met,
        "mean_batch_size": run.batcher.get("mean_batch_size"),
        "wall_s": run.wall_s,
    }


def _minimums(run_s: float, queries: int) -> str:
    return (
        f"each LoadGen run lasted at least {run_s:g} s ({queries} queries at the reported "
        f"point): shorter than MLPerf's {MLPERF_MIN_DURATION_S:g} s minimum run duration, so "
        f"this is a tuning measurement, not an MLPerf-compliant result"
    )


_MORE_QUERIES = re.compile(r"run at least (\d+) more queries")


def _queries_short(run: LoadGenRun, p99_ms: float) -> int | None:
    """How many more queries LoadGen's early stopping asks for, when that alone made an
    otherwise-within-bound run INVALID (else None)."""
    if run.valid or run.p99_ms is None or run.p99_ms > p99_ms:
        return None
    match = _MORE_QUERIES.search(run.early_stopping or "")
    return int(match.group(1)) if match else None


def _probe(session: LoadGenSession, batcher: BatcherConfig) -> tuple[float, list[LoadGenRun]]:
    """A rough samples/s ceiling from short Offline runs: it only seeds the search."""
    samples = max(32, 4 * batcher.max_batch_size * batcher.instances)
    runs = [session.offline(samples / 1.1, min_duration_s=1.0)]
    rate = runs[-1].samples_per_second or 0.0
    if rate > 0 and samples / rate < 0.25:  # too quick to mean much: once more, ~0.5 s long
        runs.append(session.offline(rate * 0.5 / 1.1, min_duration_s=1.0))
        rate = runs[-1].samples_per_second or rate
    if not rate > 0 or not math.isfinite(rate):
        raise EvaluationError(f"LoadGen's offline probe measured {rate!r} samples/s")
    return rate, runs


def _search_server(
    session: LoadGenSession,
    scenario: Server,
    budget_s: float,
    run_s: float,
    min_queries: int,
) -> ServingResult:
    started = time.perf_counter()
    cap, probes = _probe(session, session.batcher_config)
    runs: list[LoadGenRun] = []
    best: LoadGenRun | None = None  # the highest VALID run so far
    hi, hi_seen = cap * 1.1, False  # hi is "seen" once a run there was INVALID
    q = 0.5 * cap
    converged = False
    while True:
        expected = max(run_s, min_queries / q) + 2 * scenario.p99_ms / 1000 + 0.5
        left = budget_s - (time.perf_counter() - started)
        if expected > left:
            logger.info(
                "serving budget spent: %.1f s left, the next run needs ~%.1f s", left, expected
            )
            break
        run = session.server(q, scenario.p99_ms, min_duration_s=run_s, min_queries=min_queries)
        runs.append(run)
        more = _queries_short(run, scenario.p99_ms)
        if more is not None:
            # p99 within the bound, but too few queries for LoadGen's early-stopping verdict
            # (a stall or two among 500): run the same QPS once more with as many as it asks
            queries = run.query_count + more
            if max(run_s, queries / q) + 0.5 <= budget_s - (time.perf_counter() - started):
                run = session.server(q, scenario.p99_ms, min_duration_s=run_s, min_queries=queries)
                runs.append(run)
        if run.valid:
            best = run
        else:
            hi, hi_seen = q, True
        if best is None:
            q /= DESCEND
            continue
        lo = best.target_qps
        if hi / lo <= 1.0 + scenario.tolerance + 1e-9:
            if hi_seen:
                converged = True
                break
            q = hi  # the probe's ceiling was never tried: try it before claiming the bracket
            hi = hi * ASCEND
            continue
        q = math.sqrt(lo * hi)
    elapsed = time.perf_counter() - started
    tried = runs or probes
    if best is None:
        lowest = min(runs, key=lambda r: r.target_qps) if runs else None
        if lowest is None:
            raise EvaluationError(
                f"the serving budget of {budget_s:g} s ran out before any Server run (the probe "
                f"measured {cap:.1f} samples/s); raise the scenario's budget_s"
            )
        why = lowest.invalid_reason or lowest.early_stopping or "LoadGen judged it INVALID"
        raise NoValidQPS(
            f"LoadGen judged every target QPS tried INVALID for p99 <= {scenario.p99_ms:g} ms "
            f"({len(runs)} runs); the lowest, {lowest.target_qps:.2f} QPS, had p99 "
            f"{lowest.p99_ms:.2f} ms over {lowest.query_count} queries ({why})",
            lowest.target_qps, lowest.p99_ms, len(runs),
        )
    details: dict[str, Any] = {
        "loadgen_version": loadgen_version(),
        "validity": VALIDITY,
        "converged": converged,
        "qps_interval": [round(best.target_qps, 3), round(hi, 3) if hi_seen else None],
        "tolerance": scenario.tolerance,
        "budget_s": budget_s,
        "elapsed_s": round(elapsed, 2),
        "capacity_probe_qps": round(cap, 3),
        "scheduled_qps": best.scheduled_qps,
        "completed_qps": best.completed_qps,
        "latency_ms": best.latency_ms,
        "query_count": best.query_count,
        "overlatency_count": best.overlatency_count,
        "mean_batch_size": best.batcher.get("mean_batch_size"),
        "queue_share": best.batcher.get("queue_share"),
        "min_duration_s": run_s,
        "min_query_count": min_queries,
        "mlperf_minimums": _minimums(run_s, best.query_count),
        "runs": [_run_summary(r) for r in tried],
    }
    if not converged:
        details["not_converged"] = (
            f"the budget ran out with the highest VALID QPS in [{best.target_qps:.1f}, "
            f"{hi:.1f}]" + ("" if hi_seen else " (upper end not tried)")
        )
    return ServingResult(
        scenario=scenario.to_dict(),
        batcher=session.batcher_config.to_dict(),
        server_qps=best.target_qps,
        server_p99_ms=best.p99_ms,
        details=details,
        runs=tuple([*probes, *runs]),
    )


def _measure_offline(session: LoadGenSession, scenario: Offline, budget_s: float) -> ServingResult:
    started = time.perf_counter()
    rate, probes = _probe(session, session.batcher_config)
    run_s = min(max(budget_s / 3, MIN_RUN_S), MAX_RUN_S)
    runs: list[LoadGenRun] = []
    # LoadGen issues expected_qps x min_duration x 1.1 samples at once, and a run that ends
    # before its minimum duration is INVALID: size it above the probe's rate (the probe is short
    # and pays the warm-up), and from what a run measured when it still fell short
    expected = OFFLINE_HEADROOM * rate
    while True:
        left = budget_s - (time.perf_counter() - started)
        if runs and run_s + 0.5 > left:
            break
        run = session.offline(expected, min_duration_s=run_s)
        runs.append(run)
        if run.valid:
            break
        expected = OFFLINE_HEADROOM * max(run.samples_per_second or 0.0, expected)
    run = runs[-1]
    if not run.valid:
        raise EvaluationError(
            f"LoadGen judged the Offline run INVALID ({run.invalid_reason or 'no reason given'}) "
            f"after {len(runs)} tries within the budget of {budget_s:g} s"
        )
    offline_qps = run.samples_per_second
    details: dict[str, Any] = {
        "loadgen_version": loadgen_version(),
        "samples": run.batcher.get("requests"),
        "latency_ms": run.latency_ms,
        "mean_batch_size": run.batcher.get("mean_batch_size"),
        "queue_share": run.batcher.get("queue_share"),
        "budget_s": budget_s,
        "elapsed_s": round(time.perf_counter() - started, 2),
        "min_duration_s": run_s,
        "mlperf_minimums": _minimums(run_s, int(run.batcher.get("requests") or 0)),
        "runs": [_run_summary(r) for r in [*probes, *runs]],
    }
    return ServingResult(
        scenario=scenario.to_dict(),
        batcher=session.batcher_config.to_dict(),
        offline_qps=offline_qps,
        details=details,
        runs=tuple([*probes, *runs]),
    )


def measure_serving(
    runner_factory: Callable[[], Runner],
    inputs: Mapping[str, np.ndarray],
    scenario: Scenario | Mapping[str, Any],
    batcher: BatcherConfig | Mapping[str, Any] | None = None,
    *,
    budget_s: float | None = None,
    padding_mask: str | None = None,
    run_s: float | None = None,
    min_queries: int = MIN_QUERIES,
    log_dir: str | Path | None = None,
    keep_arrivals: bool = False,
) -> ServingResult:
    """Serve `inputs` (one query sample per row) through `batcher` and LoadGen; see the module.

    runner_factory: called once per engine instance (each instance thread gets its own runner).
    budget_s: overrides the scenario's budget. run_s: the minimum duration of each LoadGen run
    (default: a tenth of a server budget, a third of an offline one, within 1-10 s).
    log_dir: keep LoadGen's logs there, one folder per run (default: a temporary folder).
    keep_arrivals: record each run's query arrival times (`ServingResult.runs`), for validation.
    """
    scenario = scenario_from_dict(scenario)
    if not isinstance(scenario, (Server, Offline)):
        raise ConfigError(
            f"measure_serving takes a server or offline scenario, got {scenario.kind!r} "
            f"(single_stream is timed by the timing harness)"
        )
    config = (
        batcher if isinstance(batcher, BatcherConfig) else BatcherConfig.from_dict(batcher or {})
    )
    budget = scenario.budget_s if budget_s is None else float(budget_s)
    if not budget > 0:
        raise ConfigError(f"measure_serving budget_s must be > 0 seconds, got {budget_s!r}")
    if isinstance(min_queries, bool) or not isinstance(min_queries, int) or min_queries < 1:
        raise ConfigError(
            f"measure_serving min_queries must be an integer >= 1, got {min_queries!r}"
        )
    runners = []
    for i in range(config.instances):
        try:
            runners.append(runner_factory())
        except ParetotuneError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine's own error, kept as the cause
            raise EvaluationError(f"building engine instance {i} failed: {exc!r}") from exc
    session = LoadGenSession(
        runners,
        inputs,
        config,
        padding_mask=padding_mask,
        log_dir=log_dir,
        keep_arrivals=keep_arrivals,
    )
    with session:
        if isinstance(scenario, Server):
            per_run = (
                run_s
                if run_s is not None
                else min(max(budget / RUNS_PER_BUDGET, MIN_RUN_S), MAX_RUN_S)
            )
            return _search_server(session, scenario, budget, per_run, min_queries)
        return _measure_offline(session, scenario, budget)
