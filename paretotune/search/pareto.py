"""Pareto fronts, hypervolume and pick rules over completed trials.

Dominance respects what a measurement can tell apart. Every metric is compared at a stated
resolution (`DEFAULT_RESOLUTION`: accuracy, and so fidelity, to 1e-6), so floating-point noise
such as a fidelity of 1 - 3.6e-13 against 1.0 is a tie, not a win that keeps a 3.6x slower
trial on the front. With ``confidence``, two timings whose intervals overlap are tied too: a
trial is dominated only when another is better beyond the intervals in some objective and
worse beyond them in none (`non_dominated_with_intervals`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from paretotune.errors import ConfigError
from paretotune.search._optuna import compute_hypervolume, is_pareto_front
from paretotune.search.objectives import OPERATORS

if TYPE_CHECKING:
    from paretotune.search.trial import Trial

#: the reference point sits this fraction worse than the baseline in every objective
REFERENCE_MARGIN = 0.1
#: metric -> the smallest difference that counts (values are rounded to it before comparing);
#: metrics not named here are compared exactly. A study's spec key `resolution` adds to it.
DEFAULT_RESOLUTION: dict[str, float] = {"accuracy": 1e-6, "accuracy_drop": 1e-6}
#: the confidence level of the intervals a measurement carries (evaluators.timing.CI_LEVEL)
INTERVAL_LEVEL = 0.95
CONFIDENCE_LEVELS = (INTERVAL_LEVEL,)


def parse_resolution(value: Mapping[str, Any] | None) -> dict[str, float]:
    """`DEFAULT_RESOLUTION` updated with ``value`` (metric -> a number >= 0; 0 compares exactly)."""
    out = dict(DEFAULT_RESOLUTION)
    if value is None:
        return out
    if not isinstance(value, Mapping):
        raise ConfigError(f"resolution must be a mapping of metric name to a number >= 0, got {value!r}")
    for metric, res in value.items():
        if (
            not isinstance(metric, str) or isinstance(res, bool) or not isinstance(res, (int, float))
            or not math.isfinite(res) or res < 0
        ):
            raise ConfigError(
                f"resolution.{metric}: must be a finite number >= 0 (0 compares exactly), got {res!r}"
            )
        out[metric] = float(res)
    return out


def at_resolution(losses: np.ndarray, resolutions: Sequence[float]) -> np.ndarray:
    """``losses`` (n, m) with column k rounded to the nearest multiple of ``resolutions[k]``
    (0: unchanged). Rounding to a grid keeps dominance transitive, where a tolerance would not."""
    out = np.array(losses, dtype=float, copy=True).reshape(len(losses), len(resolutions))
    for k, res in enumerate(resolutions):
        if res > 0:
            out[:, k] = np.round(out[:, k] / res) * res
    return out


def non_dominated_with_intervals(
    losses: np.ndarray, lows: np.ndarray, highs: np.ndarray, resolutions: Sequence[float]
) -> np.ndarray:
    """Boolean mask of the rows no other row dominates beyond the noise (minimization).

    ``lows``/``highs``: each value's interval in loss form, NaN where a value has none. Row i
    is better than row j in objective k when both have intervals and i's lies wholly below
    j's, or, where either lacks one, when i's value at resolution is lower. j is dominated
    when some i is better in some objective and j is better than i in none.
    """
    pts = at_resolution(losses, resolutions)
    n = len(pts)
    if n == 0:
        return np.zeros(0, dtype=bool)
    lo = np.asarray(lows, dtype=float).reshape(pts.shape)
    hi = np.asarray(highs, dtype=float).reshape(pts.shape)
    has = ~(np.isnan(lo) | np.isnan(hi))
    both = has[:, None, :] & has[None, :, :]
    # better[i, j, k]: row i beats row j in objective k beyond the noise
    better = np.where(both, hi[:, None, :] < lo[None, :, :], pts[:, None, :] < pts[None, :, :])
    beats = better.any(axis=2)
    dominated: np.ndarray = np.asarray((beats & ~beats.T).any(axis=0), dtype=bool)
    return np.logical_not(dominated)


def to_loss(values: Sequence[float], directions: Sequence[str]) -> list[float]:
    """Objective values in minimization form (max objectives negated)."""
    return [v if d == "min" else -v for v, d in zip(values, directions, strict=True)]


def non_dominated(losses: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of a (n, m) minimization matrix."""
    if len(losses) == 0:
        return np.zeros(0, dtype=bool)
    return is_pareto_front(np.asarray(losses, dtype=float), assume_unique_lexsorted=False)


def reference_point(baseline_loss: Sequence[float], margin: float = REFERENCE_MARGIN) -> np.ndarray:
    """The documented reference point: ``margin`` worse than the baseline in each objective.

    In minimization form r_i = b_i + margin * |b_i| (or + margin when b_i == 0). Only points
    better than the baseline-plus-margin in every objective add volume.
    """
    b = np.asarray(baseline_loss, dtype=float)
    return b + margin * np.where(b == 0, 1.0, np.abs(b))


def hypervolume(losses: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume dominated by ``losses`` (minimization) up to ``ref``."""
    pts = np.asarray(losses, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return float(compute_hypervolume(pts, np.asarray(ref, dtype=float)))


def _parse_where(where: Mapping[str, Any] | None) -> list[tuple[str, str, float]]:
    out = []
    for metric, rule in (where or {}).items():
        if not isinstance(rule, (list, tuple)) or len(rule) != 2 or rule[0] not in OPERATORS:
            raise ConfigError(
                f"pick: where.{metric} must be (op, bound) with op in {list(OPERATORS)}, got {rule!r}"
            )
        out.append((metric, rule[0], float(rule[1])))
    return out


class Front(Sequence["Trial"]):
    """The feasible, non-dominated, completed trials of a study, with pick rules.

    ``confidence``: None for the plain front (values compared at ``resolution``), or the
    level of the intervals within which timings were tied."""

    def __init__(
        self,
        trials: Sequence[Trial],
        objectives: Mapping[str, str],
        *,
        confidence: float | None = None,
        resolution: Mapping[str, float] | None = None,
    ) -> None:
        self._trials = list(trials)
        self.objectives = dict(objectives)
        self.confidence = confidence
        self.resolution = dict(DEFAULT_RESOLUTION if resolution is None else resolution)

    def __getitem__(self, i: int) -> Trial:  # type: ignore[override]
        return self._trials[i]

    def __len__(self) -> int:
        return len(self._trials)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self._trials)

    def __repr__(self) -> str:
        extra = "" if self.confidence is None else f", confidence={self.confidence}"
        return f"Front({[t.number for t in self._trials]}{extra})"

    def pick(
        self,
        rule: str | None = None,
        *,
        max: str | None = None,
        min: str | None = None,
        where: Mapping[str, Any] | None = None,
        trial: int | None = None,
    ) -> Trial:
        """Select one trial: ``pick(max="throughput", where={"latency_p99_ms": ("<=", 5)})``,
        ``pick(min=...)``, ``pick("knee")`` or ``pick(trial=N)``."""
        given = [x is not None for x in (rule, max, min, trial)]
        if sum(given) != 1:
            raise ConfigError(
                "pick: give exactly one of a rule ('knee'), max=METRIC, min=METRIC or trial=N"
            )
        if trial is not None:
            for t in self._trials:
                if t.number == trial:
                    return t
            raise ConfigError(
                f"pick: trial {trial} is not on the front; front trials: {[t.number for t in self._trials]}"
            )
        if not self._trials:
            raise ConfigError("pick: the front is empty (no feasible completed trial yet)")
        if rule is not None:
            if rule != "knee":
                raise ConfigError(f"pick: unknown rule {rule!r}; allowed: 'knee'")
            return self._knee()
        metric: str = max if max is not None else min  # type: ignore[assignment]
        clauses = _parse_where(where)
        candidates = []
        nearest: list[tuple[float, Trial, list[str]]] = []
        for t in self._trials:
            if metric not in t.metrics:
                raise ConfigError(
                    f"pick: metric {metric!r} is not measured; measured: {sorted(t.metrics)}"
                )
            broken = []
            excess = 0.0
            for m, op, bound in clauses:
                if m not in t.metrics:
                    raise ConfigError(f"pick: where names {m!r}, which is not measured; measured: {sorted(t.metrics)}")
                v = t.metrics[m]
                gap = v - bound if op == "<=" else bound - v
                if gap > 0:
                    broken.append(f"{m}={v:.6g} violates {m} {op} {bound:g}")
                    excess += gap / (abs(bound) or 1.0)
            if broken:
                nearest.append((excess, t, broken))
            else:
                candidates.append(t)
        if not candidates:
            nearest.sort(key=lambda x: x[0])
            lines = [f"  trial {t.number}: " + "; ".join(b) for _, t, b in nearest[:3]]
            raise ConfigError(
                "pick: no trial on the front satisfies "
                + ", ".join(f"{m} {op} {b:g}" for m, op, b in clauses)
                + "; the closest are:\n"
                + "\n".join(lines)
            )
        sign = 1.0 if max is not None else -1.0
        return sorted(candidates, key=lambda t: (-sign * t.metrics[metric], t.number))[0]

    def _knee(self) -> Trial:
        """The point closest to the ideal after min-max normalization of each objective."""
        names = list(self.objectives)
        losses = np.array(
            [to_loss([t.metrics[n] for n in names], [self.objectives[n] for n in names]) for t in self._trials]
        )
        lo, hi = losses.min(axis=0), losses.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        dist = np.sqrt((((losses - lo) / span) ** 2).sum(axis=1))
        return self._trials[int(np.argmin(dist))]


def finite(values: Mapping[str, Any]) -> str | None:
    """The first non-finite metric as a reason, or None."""
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"metric {k!r} is not a number: {v!r}"
        if not math.isfinite(v):
            return f"metric {k!r} is {v}"
    return None


def _losses(trials: Sequence[Trial], objectives: Mapping[str, str]) -> np.ndarray:
    return np.array([to_loss([t.metrics[m] for m in objectives], list(objectives.values())) for t in trials])


def interval_losses(trials: Sequence[Trial], objectives: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Each trial's objective intervals in minimization form (NaN where it has none)."""
    lows = np.full((len(trials), len(objectives)), np.nan)
    highs = np.full_like(lows, np.nan)
    for i, t in enumerate(trials):
        for k, (metric, direction) in enumerate(objectives.items()):
            if metric in t.intervals:
                lo, hi = t.intervals[metric]
                lows[i, k], highs[i, k] = (lo, hi) if direction == "min" else (-hi, -lo)
    return lows, highs


def front_of(completed: Sequence[Trial], objectives: Mapping[str, str], *, confidence: float | None,
             resolution: Mapping[str, float]) -> Front:
    """The feasible, non-dominated trials of ``completed``, compared at ``resolution`` (and,
    with ``confidence``, tied where their intervals overlap)."""
    feasible = [t for t in completed if t.feasible]
    if not feasible:
        return Front([], dict(objectives), confidence=confidence, resolution=dict(resolution))
    losses = _losses(feasible, objectives)
    steps = [resolution.get(m, 0.0) for m in objectives]
    if confidence is None:
        mask = non_dominated(at_resolution(losses, steps))
    else:
        lows, highs = interval_losses(feasible, objectives)
        mask = non_dominated_with_intervals(losses, lows, highs, steps)
    kept = [t for t, keep in zip(feasible, mask, strict=True) if keep]
    return Front(kept, dict(objectives), confidence=confidence, resolution=dict(resolution))


def hypervolume_history(completed: Sequence[Trial], objectives: Mapping[str, str],
                        ref: np.ndarray) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible trials so far) for each completed trial."""
    out, pts = [], []
    for t in sorted(completed, key=lambda t: t.number):
        if t.feasible:
            pts.append(to_loss([t.metrics[m] for m in objectives], list(objectives.values())))
        out.append((t.number, hypervolume(np.array(pts), ref) if pts else 0.0))
    return out
