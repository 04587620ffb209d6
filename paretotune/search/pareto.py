"""Pareto fronts, hypervolume and pick rules over completed trials."""

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
    """The feasible, non-dominated, completed trials of a study, with pick rules."""

    def __init__(self, trials: Sequence[Trial], objectives: Mapping[str, str]) -> None:
        self._trials = list(trials)
        self.objectives = dict(objectives)

    def __getitem__(self, i: int) -> Trial:  # type: ignore[override]
        return self._trials[i]

    def __len__(self) -> int:
        return len(self._trials)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self._trials)

    def __repr__(self) -> str:
        return f"Front({[t.number for t in self._trials]})"

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
