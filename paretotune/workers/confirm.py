"""Confirming a study's numbers: re-measure chosen trials in several fresh processes.

One in-study measurement is one process's view of a shared machine: its stability check sees
drift inside that process, not a slowdown that lasts the whole process (another tenant's job,
a different core, memory placement). pyperf's answer is to time in several fresh processes and
report their median; `confirm` does that for the trials that matter (by default the Pareto
front). Each of `processes` fresh interpreters measures every chosen config once, in an order
rotated by one per process, together with the study's baseline config at each chosen trial's
batch size and threads, so each process also yields a paired speedup. Every measurement is
stored as it finishes (table ``pt_confirmations``); `paretotune.search.confirmations`
summarizes a run from those rows (medians, spreads, paired speedups, intervals over processes).

`compare` is the A/B test beside it: two trials measured together in each of K fresh
processes (interleaved window by window inside each), stored in the same table with roles
"compare_a"/"compare_b", and judged by `paretotune.search.comparisons`.
"""

from __future__ import annotations

import logging
import statistics
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from paretotune.errors import ConfigError, StudyError
from paretotune.search import Study, Trial, TrialState
from paretotune.search.comparisons import COMPARE_A, COMPARE_B, TIMINGS, Comparison, comparisons
from paretotune.search.confirmations import (
    REFERENCE,
    TRIAL,
    Confirmation,
    confirmations,
    reference_config,
)
from paretotune.space import Config
from paretotune.workers.executor import TrialExecutor

log = logging.getLogger(__name__)

DEFAULT_PROCESSES = 3


def _chosen(study: Study, trials: Sequence[Trial | int] | Trial | int | None) -> list[Trial]:
    if trials is None:
        chosen = list(study.pareto_front())
        if not chosen:
            raise StudyError(f"study {study.name!r} has no feasible completed trial to confirm")
        return chosen
    if isinstance(trials, (int, Trial)):
        trials = [trials]
    out: list[Trial] = []
    for item in trials:
        t = _complete_trial(study, "trials", item, "confirmed")
        if all(o.number != t.number for o in out):
            out.append(t)
    return out


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
            pairs.append((baseline.number, reference_config(baseline, t), REFERENCE))
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
                error = (None if outcome.state == TrialState.COMPLETE else
                         outcome.reason if outcome.state == TrialState.FAIL else f"invalid: {outcome.reason}")
                study.store.record_confirmation(
                    study.name, run_id, p, number, config.to_json(), outcome.metrics if error is None else None,
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
    keep = ("stable", "spread", "windows", "n_samples", "cache_hit", "artifact_source", "hardware", "ci_level")
    return {k: v for k, v in details.items() if k in keep or k.endswith("_ci")}


# -- A/B comparison -----------------------------------------------------------------------------

DEFAULT_COMPARE_PROCESSES = 5
#: rounds of (a, b) calls per process for an evaluator without `measure_pair` (a callable)
CALLABLE_ROUNDS = 3


class PairedMeasure:
    """What a compare process runs: configs `a` and `b` measured side by side.

    A `TaskEvaluator` (anything with `measure_pair`) times them interleaved window by window;
    any other evaluator is called alternately, a, b, b, a, ... (`CALLABLE_ROUNDS` each), each
    call standing for a window. The executor's message is `a`'s config; the result holds both.
    """

    def __init__(self, evaluator: Any, a: Config, b: Config) -> None:
        self.evaluator, self.a, self.b = evaluator, a, b

    def __call__(self, config: Config) -> Any:
        from paretotune.evaluators.measurement import Measurement
        from paretotune.workers._entry import _normalize

        if hasattr(self.evaluator, "measure_pair"):
            return self.evaluator.measure_pair(self.a, self.b)
        runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
        for i in range(CALLABLE_ROUNDS):
            for side in ("a", "b") if i % 2 == 0 else ("b", "a"):
                metrics, _ = _normalize(self.evaluator(self.a if side == "a" else self.b))
                runs[side].append(metrics)
        details: dict[str, Any] = {"timing": "a callable evaluator, called alternately"}
        for side, got in runs.items():
            common = set.intersection(*(set(m) for m in got))
            details[side] = {
                "metrics": {k: float(statistics.median(m[k] for m in got)) for k in sorted(common)},
                "windows": {k: [float(m[k]) for m in got] for k in TIMINGS if k in common},
                "n_samples": len(got),
            }
        return Measurement(metrics=dict(details["a"]["metrics"]), details=details)


def _complete_trial(study: Study, field: str, item: Trial | int, verb: str) -> Trial:
    """The COMPLETE trial `item` names (a Trial or its number); ConfigError naming `field`."""
    number = item.number if isinstance(item, Trial) else item
    by_number = {t.number: t for t in study.trials}
    if isinstance(number, bool) or not isinstance(number, int) or number not in by_number:
        raise ConfigError(
            f"{field}: {item!r} is not a trial number of study {study.name!r} "
            f"(it has trials 0..{max(by_number, default=-1)})"
        )
    t = by_number[number]
    if t.state != TrialState.COMPLETE or t.config is None:
        raise ConfigError(
            f"{field}: trial {number} of study {study.name!r} is {t.state.value}; only COMPLETE "
            f"trials (measured, not answered as duplicates) can be {verb}"
        )
    return t


def _comparable(study: Study, field: str, item: Trial | int) -> Trial:
    return _complete_trial(study, field, item, "compared")


def _config(t: Trial) -> Config:
    if t.config is None:  # _comparable refused it already
        raise ConfigError(f"trial {t.number} has no config")
    return t.config


def compare(
    study: Study,
    a: Trial | int,
    b: Trial | int,
    *,
    evaluator: Any = None,
    processes: int | None = None,
    show_progress: bool | None = None,
) -> Comparison:
    """Measure trials `a` and `b` side by side in `processes` fresh processes (default 5,
    at least 2), interleaved inside each, their builds from the artifact cache; store every
    process's measurement and return the verdict (`search.comparisons`), one line per metric.
    """
    processes = DEFAULT_COMPARE_PROCESSES if processes is None else processes
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 2:
        raise ConfigError(
            f"processes must be an integer >= 2 (an A/B test needs fresh processes to repeat in), "
            f"got {processes!r}"
        )
    ta, tb = _comparable(study, "a", a), _comparable(study, "b", b)
    if ta.number == tb.number:
        raise ConfigError(f"b: trial {tb.number} is also a; compare two different trials")
    from paretotune.workers.pool import resolve_evaluator

    config_a, config_b = _config(ta), _config(tb)
    measure = PairedMeasure(resolve_evaluator(study, evaluator), config_a, config_b)
    run_id = uuid.uuid4().hex
    progress = sys.stderr.isatty() if show_progress is None else show_progress
    log.info("comparing trials %d and %d of %r in %d fresh processes (run %s)",
             ta.number, tb.number, study.name, processes, run_id)
    pair = [ta.number, tb.number]
    for p in range(processes):
        with TrialExecutor(measure, timeout_s=study.trial_timeout_s) as executor:
            outcome = executor.run(config_a)
        error = (None if outcome.state == TrialState.COMPLETE else
                 outcome.reason if outcome.state == TrialState.FAIL else f"invalid: {outcome.reason}")
        shared = {k: v for k, v in outcome.details.items() if k not in ("a", "b")}
        for role, t, side in ((COMPARE_A, ta, "a"), (COMPARE_B, tb, "b")):
            got = outcome.details.get(side) or {}
            metrics = got.get("metrics") if error is None else None
            details = {"role": role, "pair": pair, **{k: v for k, v in got.items() if k != "metrics"}, **shared}
            study.store.record_confirmation(
                study.name, run_id, p, t.number, _config(t).to_json(), metrics, details, error,
            )
        if progress:
            sys.stderr.write(f"compare: process {p + 1}/{processes}: {error or 'measured'}\n")
            sys.stderr.flush()
    return comparisons(study, run_id=run_id)[0]
