"""Reading a study's confirmation runs: stored fresh-process measurements, summarized.

`paretotune.workers.confirm` measures (each chosen trial once per fresh process, with the
baseline config at its batch size and threads beside it) and stores each measurement in
``pt_confirmations``. This module only reads those rows: per trial, the median over
processes of each metric, the spread (max/min - 1) of p50 latency and throughput, the lowest
p50 (the least disturbed process), the median of the per-process speedups with its range, and
for each timing and the speedup the distribution-free interval of the median over processes
(`stats.order_statistic_interval`, with its exact level: 93.75% for 5 processes, 75% for 3).
The trials' own rows are never changed: the front stays the study's, and the confirmation
stands beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from paretotune.errors import StudyError
from paretotune.search.stats import order_statistic_interval
from paretotune.search.trial import Trial
from paretotune.space import Config
from paretotune.storage import StudyStore

#: metrics whose spread over processes a confirmation reports
SPREAD_METRICS = ("latency_p50_ms", "throughput")
#: metrics whose interval over processes a confirmation reports (and `speedup`)
INTERVAL_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput")
#: the `role` of a stored confirmation row: a chosen trial, or the baseline beside it
TRIAL, REFERENCE = "trial", "reference"


class ConfirmedStudy(Protocol):
    """What a summary reads of a study (a `Study` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> StudyStore: ...

    @property
    def trials(self) -> list[Trial]: ...

    def baseline_trial(self) -> Trial | None: ...


@dataclass(frozen=True)
class Confirmation:
    """One trial re-measured in fresh processes."""

    trial: int
    config: Config
    run_id: str
    processes: int  # processes whose measurement succeeded
    recorded: dict[str, float]  # the trial's in-study metrics
    metrics: dict[str, float]  # median over processes of every metric all of them gave
    spread: dict[str, float]  # max/min - 1 over processes, for SPREAD_METRICS
    per_process: list[dict[str, float]] = field(default_factory=list)
    speedup: float | None = None  # median over processes of baseline p50 / this p50
    speedup_range: tuple[float, float] | None = None
    stable: int = 0  # processes whose timing ended stable
    errors: list[str] = field(default_factory=list)
    #: the lowest p50 over processes: the least disturbed one. Other tenants only ever add
    #: time, so on a shared machine this repeats best (timeit's rule); the median is typical.
    best_p50_ms: float | None = None
    #: metric -> (low, high): the interval of the median over processes, at `interval_level`
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    interval_level: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "config": self.config.to_dict(),
            "run_id": self.run_id,
            "processes": self.processes,
            "recorded": dict(self.recorded),
            "metrics": dict(self.metrics),
            "spread": dict(self.spread),
            "per_process": [dict(m) for m in self.per_process],
            "speedup": self.speedup,
            "speedup_range": list(self.speedup_range) if self.speedup_range else None,
            "stable": self.stable,
            "errors": list(self.errors),
            "best_p50_ms": self.best_p50_ms,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "interval_level": self.interval_level,
        }


def reference_config(baseline: Trial | None, trial: Trial) -> Config | None:
    """The baseline config at `trial`'s batch size and threads (what its speedup divides)."""
    if baseline is None or baseline.config is None or trial.config is None:
        return None
    values = baseline.config.to_dict()
    for key in ("batch_size", "threads"):
        if key in trial.config:
            values[key] = trial.config[key]
    return Config(values)


def confirmations(
    study: ConfirmedStudy, *, run_id: str | None = None, trials: Sequence[int] | None = None
) -> list[Confirmation]:
    """Summaries of a stored confirmation run (default: the latest), one per confirmed trial."""
    rows = [r for r in study.store.confirmation_rows(study.name)
            if r["details"].get("role") in (TRIAL, REFERENCE)]  # not the A/B comparisons
    if run_id is None:
        if not rows:
            return []
        run_id = rows[-1]["run_id"]
    return _summarize(study, rows, run_id, trials)


def latest_confirmation(study: ConfirmedStudy, number: int) -> Confirmation | None:
    """The newest confirmation of trial `number` (from whichever run confirmed it last)."""
    rows = study.store.confirmation_rows(study.name)
    runs = [r["run_id"] for r in rows if r["trial_number"] == number and r["details"].get("role") == TRIAL]
    if not runs:
        return None
    found = _summarize(study, rows, runs[-1], [number])
    return found[0] if found else None


def _summarize(
    study: ConfirmedStudy, rows: list[dict[str, Any]], run_id: str, trials: Sequence[int] | None
) -> list[Confirmation]:
    """One Confirmation per trial of run `run_id`, from the study's confirmation `rows`."""
    rows = [r for r in rows if r["run_id"] == run_id]
    if not rows:
        raise StudyError(f"study {study.name!r} has no confirmation run {run_id!r}")
    by_number = {t.number: t for t in study.trials}
    baseline = study.baseline_trial()
    numbers = list(trials) if trials is not None else sorted(
        {r["trial_number"] for r in rows if r["details"].get("role") == TRIAL}
    )
    # config json -> {process: row}
    measured: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        measured.setdefault(r["config"], {})[r["process"]] = r
    out = []
    for number in numbers:
        t = by_number.get(number)
        if t is None or t.config is None:
            continue
        mine = measured.get(t.config.to_json(), {})
        ok = {p: r for p, r in mine.items() if r["metrics"] is not None}
        per_process = [ok[p]["metrics"] for p in sorted(ok)]
        common = set.intersection(*(set(m) for m in per_process)) if per_process else set()
        medians = {k: float(statistics.median(m[k] for m in per_process)) for k in sorted(common)
                   if all(isinstance(m[k], (int, float)) for m in per_process)}
        spread = {}
        for k in SPREAD_METRICS:
            values = [m[k] for m in per_process if m.get(k)]
            if values:
                spread[k] = max(values) / min(values) - 1.0
        ref = reference_config(baseline, t)
        ratios = []
        if ref is not None:
            ref_rows = measured.get(ref.to_json(), {})
            for p, r in ok.items():
                base = ref_rows.get(p)
                if base and base["metrics"] and r["metrics"].get("latency_p50_ms"):
                    ratios.append(base["metrics"]["latency_p50_ms"] / r["metrics"]["latency_p50_ms"])
        intervals: dict[str, tuple[float, float]] = {}
        level: float | None = None
        for k, values in [*((k, [m[k] for m in per_process if k in m]) for k in INTERVAL_METRICS),
                          ("speedup", ratios)]:
            found = order_statistic_interval(values) if len(values) == len(per_process) else None
            if found is not None:
                intervals[k], level = (found[0], found[1]), found[2]
        out.append(
            Confirmation(
                trial=number,
                config=t.config,
                run_id=run_id,
                processes=len(ok),
                recorded=dict(t.metrics),
                metrics=medians,
                spread=spread,
                per_process=per_process,
                speedup=float(statistics.median(ratios)) if ratios else None,
                speedup_range=(min(ratios), max(ratios)) if ratios else None,
                stable=sum(1 for r in ok.values() if r["details"].get("stable") is True),
                errors=[f"process {p}: {r['error']}" for p, r in sorted(mine.items()) if r["error"]],
                best_p50_ms=min((m["latency_p50_ms"] for m in per_process if "latency_p50_ms" in m), default=None),
                intervals=intervals,
                interval_level=level,
            )
        )
    return out


#: the columns of `display_rows`, as the CLI and the report show a confirmation
DISPLAY_COLUMNS = [
    "trial", "processes", "stable", "recorded p50 ms", "confirmed p50 ms", "p50 interval", "p50 spread", "best p50 ms",
    "confirmed throughput", "throughput spread", "confirmed speedup", "speedup range", "accuracy", "errors",
]


def _percent(spread: dict[str, float], metric: str) -> str | None:
    return None if metric not in spread else f"{100 * spread[metric]:.1f}%"


def _interval(c: Confirmation, metric: str) -> str | None:
    if metric not in c.intervals or c.interval_level is None:
        return None
    lo, hi = c.intervals[metric]
    return f"{lo:.4g}-{hi:.4g} ({c.interval_level:.1%})"


def display_rows(results: Sequence[Confirmation]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and one row per confirmed trial: recorded against confirmed numbers."""
    rows = [
        {
            "trial": c.trial,
            "processes": c.processes,
            "stable": f"{c.stable}/{c.processes}",
            "recorded p50 ms": c.recorded.get("latency_p50_ms"),
            "confirmed p50 ms": c.metrics.get("latency_p50_ms"),
            "p50 interval": _interval(c, "latency_p50_ms"),
            "p50 spread": _percent(c.spread, "latency_p50_ms"),
            "best p50 ms": c.best_p50_ms,
            "confirmed throughput": c.metrics.get("throughput"),
            "throughput spread": _percent(c.spread, "throughput"),
            "confirmed speedup": c.speedup,
            "speedup range": None if c.speedup_range is None else f"{c.speedup_range[0]:.3g}-{c.speedup_range[1]:.3g}",
            "accuracy": c.metrics.get("accuracy"),
            "errors": "; ".join(c.errors) or None,
        }
        for c in results
    ]
    return list(DISPLAY_COLUMNS), rows
