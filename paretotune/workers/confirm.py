"""Confirming a study's numbers: re-measure chosen trials in several fresh processes.

One in-study measurement is one process's view of a shared machine: its stability check sees
drift inside that process, not a slowdown that lasts the whole process (another tenant's job,
a different core, memory placement). pyperf's answer is to time in several fresh processes and
report their median; `confirm` does that for the trials that matter (by default the Pareto
front). Each of `processes` fresh interpreters measures every chosen config once, in an order
rotated by one per process, together with the study's baseline config at each chosen trial's
batch size and threads, so each process also yields a paired speedup. Every measurement is
stored as it finishes (table ``pt_confirmations``); `confirmations` summarizes a run: the
median over processes of each metric, the spread (max/min - 1) of p50 latency and throughput,
the lowest p50 (the least disturbed process), and the median of the per-process speedups with
its range. The trials' own rows are never changed: the front stays the study's, and the
confirmation stands beside it.
"""

from __future__ import annotations

import logging
import statistics
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from paretotune.errors import ConfigError, StudyError
from paretotune.search import Study, Trial, TrialState
from paretotune.space import Config
from paretotune.workers.executor import TrialExecutor

log = logging.getLogger(__name__)

DEFAULT_PROCESSES = 3
#: metrics whose spread over processes a confirmation reports
SPREAD_METRICS = ("latency_p50_ms", "throughput")
TRIAL, REFERENCE = "trial", "reference"


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
        }


def _chosen(study: Study, trials: Sequence[Trial | int] | Trial | int | None) -> list[Trial]:
    if trials is None:
        chosen = list(study.pareto_front())
        if not chosen:
            raise StudyError(f"study {study.name!r} has no feasible completed trial to confirm")
        return chosen
    if isinstance(trials, (int, Trial)):
        trials = [trials]
    by_number = {t.number: t for t in study.trials}
    out: list[Trial] = []
    for item in trials:
        number = item.number if isinstance(item, Trial) else item
        if isinstance(number, bool) or not isinstance(number, int) or number not in by_number:
            raise ConfigError(
                f"trials: {item!r} is not a trial number of study {study.name!r} "
                f"(it has trials 0..{max(by_number, default=-1)})"
            )
        t = by_number[number]
        if t.state != TrialState.COMPLETE or t.config is None:
            raise ConfigError(
                f"trials: trial {number} of study {study.name!r} is {t.state.value}; only "
                "COMPLETE trials (measured, not answered as duplicates) can be confirmed"
            )
        if all(o.number != number for o in out):
            out.append(t)
    return out


def _reference(baseline: Trial | None, trial: Trial) -> Config | None:
    """The baseline config at `trial`'s batch size and threads (what its speedup divides)."""
    if baseline is None or baseline.config is None or trial.config is None:
        return None
    values = baseline.config.to_dict()
    for key in ("batch_size", "threads"):
        if key in trial.config:
            values[key] = trial.config[key]
    return Config(values)


def confirm(
    study: Study,
    trials: Sequence[Trial | int] | Trial | int | None = None,
    *,
    evaluator: Any = None,
    processes: int | None = None,
    show_progress: bool | None = None,
) -> list[Confirmation]:
    """Re-measure `trials` (default: the Pareto front) in `processes` fresh processes
    (default DEFAULT_PROCESSES).

    `evaluator`: a `pt.Task`, an import path or a picklable callable (default: the study's
    task). A failing measurement is stored with its reason and leaves the others standing.
    Returns the summaries of this run (also `confirmations(study)` later).
    """
    from paretotune.workers.pool import resolve_evaluator

    processes = DEFAULT_PROCESSES if processes is None else processes
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigError(f"processes must be an integer >= 1, got {processes!r}")
    chosen = _chosen(study, trials)
    run_evaluator = resolve_evaluator(study, evaluator)
    baseline = study.baseline_trial()
    jobs: list[tuple[int, Config, str]] = []  # (trial number, config, role)
    seen: set[str] = set()
    for t in chosen:
        pairs = [(t.number, t.config, TRIAL)]
        if baseline is not None:
            pairs.append((baseline.number, _reference(baseline, t), REFERENCE))
        for number, config, role in pairs:
            if config is None or config.to_json() in seen:
                continue
            seen.add(config.to_json())
            jobs.append((number, config, role))
    run_id = uuid.uuid4().hex
    progress = sys.stderr.isatty() if show_progress is None else show_progress
    log.info("confirming %d trials of %r: %d configs x %d fresh processes (run %s)",
             len(chosen), study.name, len(jobs), processes, run_id)
    for p in range(processes):
        order = jobs[p % len(jobs):] + jobs[: p % len(jobs)]
        with TrialExecutor(run_evaluator, timeout_s=study.trial_timeout_s) as executor:
            for i, (number, config, role) in enumerate(order):
                outcome = executor.run(config)
                error = outcome.error or (f"invalid: {outcome.invalid}" if outcome.invalid else None)
                study.store.record_confirmation(
                    study.name, run_id, p, number, config.to_json(), outcome.metrics,
                    {"role": role, **_timing_details(outcome.details)}, error,
                )
                if progress:
                    shown = (
                        f"p50 {outcome.metrics['latency_p50_ms']:.4g} ms"
                        if outcome.metrics and "latency_p50_ms" in outcome.metrics else error
                    )
                    what = f"trial {number}" if role == TRIAL else f"baseline at batch {config.get('batch_size', 1)}"
                    sys.stderr.write(f"confirm: process {p + 1}/{processes}, {i + 1}/{len(order)}: {what}: {shown}\n")
                    sys.stderr.flush()
    return confirmations(study, run_id=run_id, trials=[t.number for t in chosen])


def _timing_details(details: dict[str, Any]) -> dict[str, Any]:
    keep = ("stable", "spread", "windows", "n_samples", "cache_hit", "hardware")
    return {k: details[k] for k in keep if k in details}


def confirmations(
    study: Study, *, run_id: str | None = None, trials: Sequence[int] | None = None
) -> list[Confirmation]:
    """Summaries of a stored confirmation run (default: the latest), one per confirmed trial."""
    rows = study.store.confirmation_rows(study.name)
    if run_id is None:
        if not rows:
            return []
        run_id = rows[-1]["run_id"]
    return _summarize(study, rows, run_id, trials)


def _summarize(
    study: Study, rows: list[dict[str, Any]], run_id: str, trials: Sequence[int] | None
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
        ref = _reference(baseline, t)
        ratios = []
        if ref is not None:
            ref_rows = measured.get(ref.to_json(), {})
            for p, r in ok.items():
                base = ref_rows.get(p)
                if base and base["metrics"] and r["metrics"].get("latency_p50_ms"):
                    ratios.append(base["metrics"]["latency_p50_ms"] / r["metrics"]["latency_p50_ms"])
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
            )
        )
    return out


def latest_confirmation(study: Study, number: int) -> Confirmation | None:
    """The newest confirmation of trial `number` (from whichever run confirmed it last)."""
    rows = study.store.confirmation_rows(study.name)
    runs = [r["run_id"] for r in rows if r["trial_number"] == number and r["details"].get("role") == TRIAL]
    if not runs:
        return None
    found = _summarize(study, rows, runs[-1], [number])
    return found[0] if found else None


#: the columns of `display_rows`, as the CLI and the report show a confirmation
DISPLAY_COLUMNS = [
    "trial", "processes", "stable", "recorded p50 ms", "confirmed p50 ms", "p50 spread", "best p50 ms",
    "confirmed throughput", "throughput spread", "confirmed speedup", "speedup range", "accuracy", "errors",
]


def _percent(spread: dict[str, float], metric: str) -> str | None:
    return None if metric not in spread else f"{100 * spread[metric]:.1f}%"


def display_rows(results: Sequence[Confirmation]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and one row per confirmed trial: recorded against confirmed numbers."""
    rows = [
        {
            "trial": c.trial,
            "processes": c.processes,
            "stable": f"{c.stable}/{c.processes}",
            "recorded p50 ms": c.recorded.get("latency_p50_ms"),
            "confirmed p50 ms": c.metrics.get("latency_p50_ms"),
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
