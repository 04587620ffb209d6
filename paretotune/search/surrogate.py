"""The `surrogate` sampler: a Bayesian linear model of every objective, fitted to what is
measured, and the next config chosen by the hypervolume it is expected to add.

For each objective (its logarithm when every value measured so far is positive: latencies
and throughputs are products of factors, so their logs add) and for each constraint value, a
Bayesian linear regression (`bayesian_ridge`: scikit-learn's `BayesianRidge`) is fitted over
an encoding of the measured configs: a one-hot column per value of a categorical or discrete dimension (a PerLayer dimension: per layer
group), the position in its range and its square for a continuous one (log-scaled when the
dimension is), and zeros where a dimension is inactive. One set of weights is drawn from each
model's posterior (Thompson sampling: a value no trial has shown keeps its prior's spread, so
it gets tried), every candidate is predicted under that draw, and the candidate whose
predicted point adds the most hypervolume to the feasible front so far wins. Candidates are
every untried config of a finite space (up to `GRID_LIMIT` configs), else random configs of
the space plus neighbours of the front's configs. Without a candidate that adds volume under
the draw, an untried candidate is drawn at random.

The hypervolume is the study's own: its reference point sits `REFERENCE_MARGIN` worse than the
baseline trial (`pareto.reference_point`), so the sampler spends its trials where the study's
progress is measured. Values the baseline does not beat by the margin count for nothing.

It proposes whole configs: Optuna asks it one parameter at a time (define-by-run, so
conditional dimensions work), it answers the first ask of a trial with its pick for the
whole config and the later asks from that pick. Parallel workers don't propose alike: each
draw differs, and a config another worker is running counts as tried.

On the digits table it reaches the whole true front in most seeds at 5% of the space, where
`tpe` reaches about half (docs/benchmarks.md, "The surrogate sampler"). It needs a space
(`make_sampler(..., space=...)`); a study passes its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.search.pareto import hypervolume, non_dominated, reference_point, to_loss
from paretotune.search.proposals import ParamsKey, params_key
from paretotune.space import SearchSpace
from paretotune.space.dimensions import Dimension, Float, Int, PerLayer

#: a finite space up to this many configs is scored whole; a bigger one by random candidates
GRID_LIMIT = 5000
#: random candidates scored per pick in a space too big to enumerate
MAX_CANDIDATES = 1000
#: neighbours of each front config added to the random candidates
NEIGHBOURS_PER_FRONT_POINT = 25
#: a discrete numeric dimension with up to this many values is one-hot encoded (a curve with
#: an optimum inside its range needs no quadratic); with more, by position and its square
ONE_HOT_LIMIT = 16


def _contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether the pick's value is one this parameter can take (else the random answer)."""
    if isinstance(distribution, CategoricalDistribution):
        return any(type(value) is type(c) and value == c for c in distribution.choices)
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        return isinstance(value, (int, float)) and distribution.low <= value <= distribution.high
    return False


class Encoder:
    """Optuna params of a space's configs -> rows of numbers (see the module's docstring)."""

    def __init__(self, space: SearchSpace) -> None:
        self._columns: list[tuple[str, str, Any]] = []  # (param, kind, what)
        for name, dim in space.dimensions.items():
            if isinstance(dim, PerLayer):
                for group in dim.groups():
                    self._columns += [(f"{name}.{group}", "is", c) for c in dim.choices]
                continue
            values = dim.values()
            if values is not None and (not isinstance(dim, (Float, Int)) or len(values) <= ONE_HOT_LIMIT):
                self._columns += [(name, "is", v) for v in values]
                continue
            self._columns += [(name, "pos", dim), (name, "pos2", dim)]
            if dim.when:
                self._columns.append((name, "active", None))

    @property
    def width(self) -> int:
        return len(self._columns)

    def rows(self, params: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.zeros((len(params), len(self._columns)))
        for i, p in enumerate(params):
            for j, (name, kind, what) in enumerate(self._columns):
                if name not in p:
                    continue
                value = p[name]
                if kind == "is":
                    out[i, j] = float(type(value) is type(what) and value == what)
                elif kind == "active":
                    out[i, j] = 1.0
                else:
                    x = _position(what, value)
                    out[i, j] = x if kind == "pos" else x * x
        return out


def _position(dim: Dimension, value: Any) -> float:
    """Where ``value`` lies in the dimension's range, 0 to 1 (on a log scale when it is log)."""
    lo, hi, v = float(dim.low), float(dim.high), float(value)  # type: ignore[attr-defined]
    if getattr(dim, "log", False):
        lo, hi, v = math.log(lo), math.log(hi), math.log(max(v, lo))
    return (v - lo) / (hi - lo) if hi > lo else 0.0


def bayesian_ridge(
    x: np.ndarray, y: np.ndarray, *, max_iter: int = 300, tol: float = 1e-3, prior: float = 1e-6
) -> tuple[np.ndarray, float, np.ndarray]:
    """Bayesian linear regression with the noise and weight precisions fitted by evidence
    maximization (MacKay's fixed-point updates, Gamma(``prior``, ``prior``) hyperpriors):
    scikit-learn's `BayesianRidge` with its defaults, which `tests/search/test_surrogate.py`
    checks it equals. It is written out here because importing `sklearn.linear_model` takes
    2.7 s (1.5 s of it scipy), measured idle on 2 cores, in every worker process that samples,
    for a dozen lines of linear algebra over a few dozen features.

    Returns the posterior mean of the weights, the intercept and the weights' covariance."""
    n, width = x.shape
    x_mean, y_mean = x.mean(axis=0), float(y.mean())
    xc, yc = x - x_mean, y - y_mean
    gram, xty = xc.T @ xc, xc.T @ yc
    eigen = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    alpha = 1.0 / (float(yc.var()) + np.finfo(float).eps)  # noise precision
    lam = 1.0  # weight precision
    eye = np.eye(width)
    previous: np.ndarray | None = None
    for _ in range(max_iter):
        coef = alpha * np.linalg.solve(alpha * gram + lam * eye, xty)
        sse = float(np.sum((yc - xc @ coef) ** 2))
        gamma = float(np.sum(alpha * eigen / (lam + alpha * eigen)))
        lam = (gamma + 2 * prior) / (float(np.sum(coef**2)) + 2 * prior)
        alpha = (n - gamma + 2 * prior) / (sse + 2 * prior)
        if previous is not None and float(np.sum(np.abs(previous - coef))) < tol:
            break
        previous = coef
    sigma = np.linalg.inv(alpha * gram + lam * eye)
    coef = alpha * sigma @ xty
    return coef, y_mean - float(x_mean @ coef), sigma


def _draw_predictions(
    x_seen: np.ndarray, y: np.ndarray, x_cand: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One posterior draw of a Bayesian linear model of ``y``, evaluated at the candidates."""
    mean, scale = float(y.mean()), float(y.std())
    if not scale > 0:  # one value so far: nothing to learn from this column yet
        return np.full(len(x_cand), mean)
    coef, intercept, sigma = bayesian_ridge(x_seen, (y - mean) / scale)
    weights = rng.multivariate_normal(coef, (sigma + sigma.T) / 2, method="eigh")
    return (x_cand @ weights + intercept) * scale + mean


class SurrogateSampler(optuna.samplers.BaseSampler):
    """See the module's docstring. ``n_startup_trials``: measured trials (the baseline and the
    warm start count) before the model is used; until then, and for any parameter the pick
    does not hold, Optuna's `RandomSampler` answers."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int | None = None,
        n_startup_trials: int = 3,
        max_candidates: int = MAX_CANDIDATES,
    ) -> None:
        if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) or n_startup_trials < 2:
            raise ConfigError(f"sampler surrogate: n_startup_trials must be an integer >= 2, got {n_startup_trials!r}")
        if isinstance(max_candidates, bool) or not isinstance(max_candidates, int) or max_candidates < 1:
            raise ConfigError(f"sampler surrogate: max_candidates must be an integer >= 1, got {max_candidates!r}")
        self._space = space
        self._encoder = Encoder(space)
        self._n_startup = n_startup_trials
        self._max_candidates = max_candidates
        self._rng = np.random.default_rng(seed)
        self._py_rng = random.Random(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._picks: dict[int, dict[str, Any]] = {}
        #: a finished trial's params key in the candidates' form, and its encoded row, by number
        #: (a finished trial's params no longer change: each is worked out once, not per ask)
        self._finished: dict[int, tuple[ParamsKey, np.ndarray]] = {}
        size = space.size(at_most=GRID_LIMIT)
        self._finite = size is not None and size <= GRID_LIMIT
        self._grid: list[dict[str, Any]] | None = None
        self._grid_rows = np.zeros((0, self._encoder.width))

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._py_rng = random.Random()
        self._random.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        pick = self._picks.get(trial.number)
        if pick is None:
            pick = self._picks[trial.number] = self.pick(study) or {}
        if param_name in pick and _contains(param_distribution, pick[param_name]):
            return pick[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._picks.pop(trial.number, None)

    # -- the pick ----------------------------------------------------------------------------
    def pick(self, study: optuna.Study) -> dict[str, Any] | None:
        """The params of the next config to measure, or None while too little is measured."""
        trials = study.get_trials(deepcopy=False)
        seen = [
            t for t in trials
            if t.state == TrialState.COMPLETE and t.values is not None and t.user_attrs.get("duplicate_of") is None
        ]
        if len(seen) < self._n_startup:
            return None
        directions = ["min" if d == optuna.study.StudyDirection.MINIMIZE else "max" for d in study.directions]
        values = np.array([list(t.values) for t in seen], dtype=float)
        constraint_names = sorted({k for t in seen for k in t.constraints})
        limits = np.array(
            [[t.constraints.get(k, 0.0) for k in constraint_names] for t in seen], dtype=float
        ).reshape(len(seen), len(constraint_names))
        feasible = np.all(limits <= 0, axis=1)
        losses = np.array([to_loss(v, directions) for v in values.tolist()], dtype=float)
        ref = self._reference(seen, losses)
        inside = np.flatnonzero(feasible & np.all(losses < ref, axis=1))
        if len(inside):
            inside = inside[non_dominated(losses[inside])]
        front = losses[inside]
        tried = {self._key_and_row(t)[0] for t in trials}
        pool, x_pool = self._candidates([seen[i] for i in inside])
        untried = [i for i, p in enumerate(pool) if params_key(p) not in tried]
        if not untried:
            return None
        candidates = [pool[i] for i in untried]
        x_cand = x_pool[untried]
        x_seen = np.vstack([self._key_and_row(t)[1] for t in seen])
        predicted = np.empty((len(candidates), len(directions)))
        for k in range(len(directions)):
            column = values[:, k]
            logged = bool(np.all(column > 0))
            draw = _draw_predictions(x_seen, np.log(column) if logged else column, x_cand, self._rng)
            v = np.exp(np.minimum(draw, 700.0)) if logged else draw
            predicted[:, k] = v if directions[k] == "min" else -v
        ok = np.all(predicted < ref, axis=1)
        for k in range(len(constraint_names)):
            ok &= _draw_predictions(x_seen, limits[:, k], x_cand, self._rng) <= 0
        base = hypervolume(front, ref) if len(front) else 0.0
        gains = np.zeros(len(candidates))
        hopeful = np.flatnonzero(ok)
        # a candidate another candidate dominates adds no more volume than that one: skip it
        hopeful = hopeful[non_dominated(predicted[hopeful])] if len(hopeful) else hopeful
        for i in hopeful:
            point = predicted[i]
            if len(front) and np.any(np.all(front <= point, axis=1)):
                continue  # dominated: adds nothing
            gains[i] = hypervolume(np.vstack([front, point]) if len(front) else point[None], ref) - base
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            best = int(self._rng.integers(len(candidates)))
        return candidates[best]

    def _key_and_row(self, trial: FrozenTrial) -> tuple[ParamsKey, np.ndarray]:
        """A trial's params key in the candidates' form (a float on a step grid rounded alike)
        and its encoded row; kept once the trial is finished."""
        cached = self._finished.get(trial.number)
        if cached is not None:
            return cached
        try:
            key = params_key(self._space.to_params(self._space.from_params(trial.params, allow_forbidden=True)))
        except (ConfigError, InvalidConfigError):
            key = params_key(trial.params)
        out = (key, self._encoder.rows([trial.params])[0])
        if trial.state.is_finished():
            self._finished[trial.number] = out
        return out

    def _reference(self, seen: Sequence[FrozenTrial], losses: np.ndarray) -> np.ndarray:
        """The study's reference point: `REFERENCE_MARGIN` worse than the baseline trial, or
        than the worst of each objective seen when no baseline is measured."""
        for t, loss in zip(seen, losses, strict=True):
            if t.user_attrs.get("baseline"):
                return reference_point(loss)
        return reference_point(losses.max(axis=0))

    def _candidates(self, front: Sequence[FrozenTrial]) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Every config of a finite space (encoded once); else random configs and neighbours of
        the front's. Their params, and their rows."""
        space = self._space
        if self._finite:
            if self._grid is None:
                self._grid = [space.to_params(c) for c in space.grid()]
                self._grid_rows = self._encoder.rows(self._grid)
            return self._grid, self._grid_rows
        out = []
        for _ in range(self._max_candidates):
            try:
                out.append(space.to_params(space.sample(self._py_rng)))
            except ConfigError:
                break
        for t in front:  # local moves around the best measured so far
            try:
                config = space.from_params(t.params)
            except (ConfigError, InvalidConfigError):
                continue
            for _ in range(NEIGHBOURS_PER_FRONT_POINT):
                try:
                    out.append(space.to_params(space.neighbor(config, self._py_rng)))
                except ConfigError:
                    break
        return out, self._encoder.rows(out)
