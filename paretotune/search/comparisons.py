"""Reading A/B comparisons: two trials timed side by side in fresh processes, and the verdict.

`paretotune.workers.confirm.compare` measures (both configs in each of K fresh processes,
interleaved window by window inside each) and stores one row per process and side in
``pt_confirmations`` (roles "compare_a" / "compare_b"). This module reads those rows and gives
one line per metric of the study:

- A timing (p50, p90, p99, throughput, and `speedup` through p50) is the median over processes
  of each process's median per-window ratio a / b (for p50, per block: the sides alternate in
  blocks inside every window), with the distribution-free interval of that
  median over processes (`stats.order_statistic_interval`, its exact level stated: with 5
  processes, min to max at 93.8%). The test is a one-sample t-test of the per-process log
  ratios (`stats.process_ratio_p`): the unit is the process, whose windows share its luck, so
  the spread between processes is the noise; a slow process moves both sides and is evidence
  for neither. A difference is reported only when p < `ALPHA`, every process in the interval
  agrees on its direction, and it is at least `TIMING_RESOLUTION`; otherwise "no significant
  difference".
- Accuracy and sizes are not sampled: compared at the study's resolution (`pareto`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from paretotune.errors import StudyError
from paretotune.search.confirmations import ConfirmedStudy
from paretotune.search.pareto import parse_resolution
from paretotune.search.stats import order_statistic_interval, process_ratio_p

COMPARE_A, COMPARE_B = "compare_a", "compare_b"
#: metrics measured per window, and how a line names them
TIMINGS: dict[str, str] = {
    "latency_p50_ms": "p50", "latency_p90_ms": "p90", "latency_p99_ms": "p99", "throughput": "throughput",
}
#: significance level of the A/B test
ALPHA = 0.05
#: the smallest relative timing difference reported as one (1%)
TIMING_RESOLUTION = 0.01


@dataclass(frozen=True)
class MetricVerdict:
    """One metric's verdict: `ratio` is a / b (median over processes) for timings."""

    metric: str
    line: str
    significant: bool
    ratio: float | None = None
    interval: tuple[float, float] | None = None
    level: float | None = None
    p_value: float | None = None
    a_value: float | None = None
    b_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "line": self.line, "significant": self.significant, "ratio": self.ratio,
            "interval": list(self.interval) if self.interval else None, "level": self.level,
            "p_value": self.p_value, "a": self.a_value, "b": self.b_value,
        }


@dataclass(frozen=True)
class Comparison:
    """Trials `a` and `b` measured side by side in `processes` fresh processes."""

    run_id: str
    a: int
    b: int
    processes: int  # processes whose measurement succeeded
    calls: int  # calls per config per process (median)
    verdicts: list[MetricVerdict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def verdict(self, metric: str) -> MetricVerdict:
        for v in self.verdicts:
            if v.metric == metric:
                return v
        raise StudyError(f"comparison {self.run_id}: no verdict on {metric!r}; it has {[v.metric for v in self.verdicts]}")

    def lines(self) -> list[str]:
        return [f"{v.metric}: {v.line}" for v in self.verdicts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "a": self.a, "b": self.b, "processes": self.processes, "calls": self.calls,
            "verdicts": [v.to_dict() for v in self.verdicts], "errors": list(self.errors),
        }


class ComparedStudy(ConfirmedStudy, Protocol):
    """What a verdict reads of a study (a `Study` is one)."""

    @property
    def objectives(self) -> dict[str, str]: ...

    @property
    def spec(self) -> dict[str, Any]: ...


def comparisons(study: ComparedStudy, run_id: str | None = None) -> list[Comparison]:
    """The stored comparisons of `study`, oldest first (only `run_id`'s when given)."""
    rows = [r for r in study.store.confirmation_rows(study.name)
            if r["details"].get("role") in (COMPARE_A, COMPARE_B)]
    runs = list(dict.fromkeys(r["run_id"] for r in rows))
    if run_id is not None:
        if run_id not in runs:
            raise StudyError(f"study {study.name!r} has no comparison {run_id!r}; it has {runs}")
        runs = [run_id]
    return [summarize(study, [r for r in rows if r["run_id"] == run]) for run in runs]


def _metric_names(study: ComparedStudy) -> list[str]:
    constraints = [c.metric for c in getattr(study, "constraints", [])]
    names = ["latency_p50_ms", *study.objectives, *constraints]
    return list(dict.fromkeys(names))


def summarize(study: ComparedStudy, rows: Sequence[Mapping[str, Any]]) -> Comparison:
    """The verdicts of one comparison run from its rows."""
    a_rows = {r["process"]: r for r in rows if r["details"].get("role") == COMPARE_A}
    b_rows = {r["process"]: r for r in rows if r["details"].get("role") == COMPARE_B}
    first = next(iter(a_rows.values()))
    a, b = (int(n) for n in first["details"]["pair"])
    ok = sorted(p for p in a_rows if p in b_rows and a_rows[p]["metrics"] is not None and b_rows[p]["metrics"] is not None)
    side_a = [{**a_rows[p]["details"], "metrics": a_rows[p]["metrics"]} for p in ok]
    side_b = [{**b_rows[p]["details"], "metrics": b_rows[p]["metrics"]} for p in ok]
    errors = [f"process {p}: {r['error']}" for p, r in sorted(a_rows.items()) if r["error"]]
    calls = int(statistics.median(
        [a_rows[p]["details"].get("n_samples", 0) for p in ok] + [b_rows[p]["details"].get("n_samples", 0) for p in ok]
    )) if ok else 0
    recorded = {t.number: t.metrics for t in study.trials if t.number in (a, b)}
    resolution = parse_resolution(study.spec.get("resolution"))
    verdicts = []
    for metric in _metric_names(study):
        if not ok:
            break
        if metric in TIMINGS:
            verdicts.append(_timing(metric, a, b, side_a, side_b, calls))
        elif metric == "speedup":
            verdicts.append(_speedup(a, b, side_a, side_b, calls))
        else:
            values_a = [a_rows[p]["metrics"].get(metric) for p in ok]
            values_b = [b_rows[p]["metrics"].get(metric) for p in ok]
            measured = all(v is not None for v in values_a + values_b)
            if not measured:
                values_a = [recorded.get(a, {}).get(metric)]
                values_b = [recorded.get(b, {}).get(metric)]
            verdicts.append(_exact(metric, a, b, values_a, values_b, resolution.get(metric, 0.0),
                                   study.objectives.get(metric), measured))
    return Comparison(first["run_id"], a, b, len(ok), calls, verdicts, errors)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _per_process(metric: str, a_details: Sequence[Mapping[str, Any]], b_details: Sequence[Mapping[str, Any]]
                 ) -> list[float] | None:
    """Each process's median ratio a / b of its interleaved windows (for p50, of its
    alternating blocks), or None when some process lacks that metric's windows."""
    ratios = []
    for da, db in zip(a_details, b_details, strict=True):
        wa = (da.get("windows") or {}).get(metric)
        wb = (db.get("windows") or {}).get(metric)
        if not wa or not wb or len(wa) != len(wb) or min(wa + wb) <= 0:
            return None
        blocks = da.get("block_ratios") if metric == "latency_p50_ms" else None
        if blocks:  # p50 of alternating blocks inside each window (b / a): finer pairing
            ratios.append(statistics.median(1.0 / x for x in blocks))
        else:
            ratios.append(statistics.median(x / y for x, y in zip(wa, wb, strict=True)))
    return ratios


def _timing(metric: str, a: int, b: int, a_details: Sequence[Mapping[str, Any]],
            b_details: Sequence[Mapping[str, Any]], calls: int) -> MetricVerdict:
    label = TIMINGS[metric]
    ratios = _per_process(metric, a_details, b_details)
    if ratios is None:
        why = "windows of >= 100 calls" if metric == "latency_p99_ms" else "per-window values in every process"
        return MetricVerdict(metric, f"not compared: needs {why}", False)
    return _verdict(metric, label, a, b, ratios, process_ratio_p(ratios), calls,
                    higher_is_better=metric == "throughput", a_details=a_details, b_details=b_details)


def _speedup(a: int, b: int, a_details: Sequence[Mapping[str, Any]], b_details: Sequence[Mapping[str, Any]],
             calls: int) -> MetricVerdict:
    """speedup_a / speedup_b is p50_b / p50_a: the same baseline divides both."""
    ratios = _per_process("latency_p50_ms", a_details, b_details)
    if ratios is None:
        return MetricVerdict("speedup", "not compared: needs p50 windows in every process", False)
    inverse = [1 / r for r in ratios]
    return _verdict("speedup", "speedup", a, b, inverse, process_ratio_p(inverse), calls,
                    higher_is_better=True, a_details=a_details, b_details=b_details)


def _verdict(metric: str, label: str, a: int, b: int, ratios: list[float], p: float | None, calls: int, *,
             higher_is_better: bool, a_details: Sequence[Mapping[str, Any]],
             b_details: Sequence[Mapping[str, Any]]) -> MetricVerdict:
    ratio = float(statistics.median(ratios))
    found = order_statistic_interval(ratios)
    interval = (found[0], found[1]) if found else None
    level = found[2] if found else None
    agrees = interval is not None and (interval[0] > 1 or interval[1] < 1)
    significant = p is not None and p < ALPHA and agrees and abs(ratio - 1) >= TIMING_RESOLUTION
    evidence = (
        f"{len(ratios)} processes × {calls:,} calls"
        + ("" if p is None else f", t-test over processes p = {p:.2g}")
    )
    values: list[float | None] = [None, None]
    if metric != "speedup":
        values = [float(statistics.median(d["metrics"].get(metric, math.nan) for d in side))
                  for side in (a_details, b_details)]
    if significant and interval is not None and level is not None:
        if metric.startswith("latency"):
            word, pct = ("faster", 1 - ratio) if ratio < 1 else ("slower", ratio - 1)
            lo, hi = sorted((abs(1 - interval[0]), abs(1 - interval[1])))
            line = f"trial {a} is {_pct(pct)} {word} than trial {b} at {label}"
        else:
            word = "higher" if ratio > 1 else "lower"
            lo, hi = sorted((abs(interval[0] - 1), abs(interval[1] - 1)))
            line = f"trial {a} has a {_pct(abs(ratio - 1))} {word} {label} than trial {b}"
        line += f" ({level:.1%} CI {100 * lo:.1f}–{100 * hi:.1f}%, {evidence})"
    else:
        span = "" if interval is None else f", {level:.1%} CI {100 * (interval[0] - 1):+.1f}% to {100 * (interval[1] - 1):+.1f}%"
        at = f"at {label}" if metric.startswith("latency") else f"in {label}"
        line = (f"no significant difference between trial {a} and trial {b} {at} "
                f"(a / b {100 * (ratio - 1):+.1f}%{span}, {evidence})")
    return MetricVerdict(metric, line, significant, ratio, interval, level, p, values[0], values[1])


def _exact(metric: str, a: int, b: int, values_a: list[Any], values_b: list[Any], resolution: float,
           direction: str | None, measured: bool) -> MetricVerdict:
    """A metric that is not sampled (accuracy, sizes): equal at resolution, or which is higher."""
    if any(v is None for v in values_a + values_b):
        return MetricVerdict(metric, "not compared: not measured for both trials", False)
    va, vb = float(statistics.median(values_a)), float(statistics.median(values_b))
    source = "measured in every process" if measured else "as recorded in the study"
    if measured and (len(set(values_a)) > 1 or len(set(values_b)) > 1):
        source = "median over processes; it varied"
    step = resolution or 0.0
    same = (round(va / step) == round(vb / step)) if step > 0 else va == vb
    if same:
        at = f" at resolution {step:g}" if step > 0 else ""
        return MetricVerdict(metric, f"trial {a} and trial {b} are equal{at} ({va:.6g}, {source})", False,
                             a_value=va, b_value=vb)
    word = "higher" if va > vb else "lower"
    note = "" if direction is None else (" (better)" if (va > vb) == (direction == "max") else " (worse)")
    return MetricVerdict(metric, f"trial {a} is {word}{note}: {va:.6g} against {vb:.6g} ({source})", True,
                         a_value=va, b_value=vb)
