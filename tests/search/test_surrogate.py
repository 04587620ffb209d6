"""The `surrogate` sampler (search/surrogate.py): a Bayesian linear model per objective, picks by
the hypervolume it expects to add. Seeded, no timing."""

from __future__ import annotations

import importlib
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import paretotune as pt
from paretotune.search.pareto import hypervolume, non_dominated, reference_point
from paretotune.search.samplers import make_sampler
from paretotune.search.surrogate import Encoder
from paretotune.testing import ReplayEvaluator

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "benchmarks" / "data" / "digits_table.csv"

# An additive space of 4**5 = 1024 configs: a slow/fast factor and a quality per value. The
# best trade-offs need the right value in every dimension at once, which random draws of
# 40 configs seldom hold.
SPEED = {"a": [1.0, 0.7, 0.5, 0.9], "b": [1.0, 1.2, 0.6, 0.8], "c": [1.0, 0.9, 0.95, 0.4],
         "d": [1.0, 0.5, 0.8, 0.85], "e": [1.0, 1.1, 0.9, 0.7]}
QUALITY = {"a": [0.0, -0.01, -0.02, 0.0], "b": [0.0, 0.01, -0.005, 0.0], "c": [0.0, 0.0, 0.0, -0.03],
           "d": [0.0, -0.002, 0.0, -0.004], "e": [0.0, -0.001, 0.0, -0.02]}


def _efficiency() -> Any:
    """benchmarks/sampler_efficiency.py: the digits table's true front and its replayed studies."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("sampler_efficiency")


def additive(config):
    latency = 10.0 * float(np.prod([SPEED[k][config[k]] for k in SPEED]))
    return {"latency_p50_ms": latency, "accuracy": 0.9 + sum(QUALITY[k][config[k]] for k in QUALITY)}


def additive_space() -> pt.SearchSpace:
    return pt.SearchSpace({k: pt.Choice([0, 1, 2, 3]) for k in SPEED})


def true_hv() -> tuple[float, np.ndarray]:
    rows = [additive(dict(zip(SPEED, v, strict=True))) for v in itertools.product(range(4), repeat=5)]
    losses = np.array([[r["latency_p50_ms"], -r["accuracy"]] for r in rows])
    base = additive(dict.fromkeys(SPEED, 0))
    ref = reference_point([base["latency_p50_ms"], -base["accuracy"]])
    return hypervolume(losses[non_dominated(losses)], ref), ref


def study_hv(tmp_path: Path, sampler: str, seed: int, n: int) -> float:
    study = pt.create_study(f"{sampler}-{seed}", f"sqlite:///{tmp_path}/s.db", space=additive_space(),
                            objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler=sampler,
                            seed=seed, warm_start="none")
    for _ in range(n):
        pending = study.ask()
        study.tell(pending, additive(pending.config))
    total, ref = true_hv()
    front = np.array([[t.metrics["latency_p50_ms"], -t.metrics["accuracy"]] for t in study.completed()])
    return hypervolume(front[non_dominated(front)], ref) / total


def test_the_surrogate_learns_an_additive_space_that_random_draws_do_not_cover(tmp_path) -> None:
    ours = [study_hv(tmp_path, "surrogate", seed, 40) for seed in (0,)]
    theirs = [study_hv(tmp_path, "random", seed, 40) for seed in (0, 1)]
    assert min(ours) >= 0.95, ours
    assert min(ours) > max(theirs), (ours, theirs)


def test_on_the_digits_table_it_reaches_the_true_front_within_a_tenth_of_the_space(tmp_path) -> None:
    se = _efficiency()
    truth = se.TrueFront(TABLE)
    run = se.run_one(str(TABLE), "surrogate", "surrogate", 0, 53, se.OBJECTIVES)
    hv, _ = truth.score(run["completed"])
    assert hv >= 0.95, hv


def test_it_proposes_whole_configs_of_a_conditional_space_and_never_one_being_measured(tmp_path) -> None:
    se = _efficiency()
    replay = ReplayEvaluator(TABLE)
    study = pt.create_study("cond", f"sqlite:///{tmp_path}/s.db", space=se.stored_space(TABLE),
                            objectives=dict(se.OBJECTIVES), constraints={"accuracy_drop": ("<=", 0.01)},
                            sampler="surrogate", seed=3)
    for _ in range(12):  # the baseline, the warm start's corners, then the model
        pending = study.ask()
        try:
            m = replay(pending.config)
        except pt.errors.InvalidConfigError as exc:
            study.tell_invalid(pending, str(exc))
            continue
        study.tell(pending, m.metrics, m.details)
    first, second = study.ask(), study.ask()  # two workers, neither has told yet
    assert first.config != second.config
    for pending in (first, second):
        # a conditional dimension is present exactly when its condition holds
        assert ("quant_mode" in pending.config) == (
            pending.config["engine"] == "onnxruntime" and pending.config["bit_width"] == 8)


def test_bad_options_and_a_missing_space_are_refused(toy_space) -> None:
    with pytest.raises(pt.ConfigError, match="n_startup_trials.*>= 2.*got 1"):
        make_sampler({"name": "surrogate", "n_startup_trials": 1}, seed=0, space=toy_space)
    with pytest.raises(pt.ConfigError, match="max_candidates"):
        make_sampler({"name": "surrogate", "max_candidates": 0}, seed=0, space=toy_space)
    with pytest.raises(pt.ConfigError, match="needs the study's space"):
        make_sampler("surrogate", seed=0)


def test_the_encoding_is_one_hot_for_values_and_a_position_for_continuous_ranges() -> None:
    space = pt.SearchSpace({
        "engine": pt.Choice(["torch", "onnxruntime"]),
        "x": pt.Float(0.0, 2.0),
        "q": pt.Choice(["a", "b"], when={"engine": "onnxruntime"}),
    })
    enc = Encoder(space)
    rows = enc.rows([{"engine": "torch", "x": 1.0}, {"engine": "onnxruntime", "x": 2.0, "q": "b"}])
    assert enc.width == 2 + 2 + 2
    assert rows[0].tolist() == [1, 0, 0.5, 0.25, 0, 0]
    assert rows[1].tolist() == [0, 1, 1.0, 1.0, 0, 1]


def test_auto_is_the_surrogate_over_a_finite_space_and_tpe_over_a_continuous_one(tmp_path, toy_space) -> None:
    import optuna

    from paretotune.search.surrogate import SurrogateSampler

    continuous = pt.SearchSpace({"x": pt.Float(0.0, 1.0), "engine": pt.Choice(["torch", "onnxruntime"])})
    assert isinstance(make_sampler("auto", seed=0, space=toy_space), SurrogateSampler)
    assert isinstance(make_sampler("auto", seed=0, space=continuous), optuna.samplers.TPESampler)
    with pytest.raises(pt.ConfigError, match="'auto' takes no options"):
        make_sampler({"name": "auto", "n_startup_trials": 4}, seed=0, space=toy_space)
    study = pt.create_study("auto", f"sqlite:///{tmp_path}/s.db", space=toy_space,
                            objectives={"latency_p50_ms": "min", "accuracy": "max"})
    assert study.spec["sampler"] == "auto"
    assert study.summary()["sampler"] == "auto (surrogate)"


@pytest.mark.parametrize("n, width", [(30, 8), (5, 12)])
def test_the_bayesian_linear_model_is_scikit_learns_bayesian_ridge(n: int, width: int) -> None:
    from sklearn.linear_model import BayesianRidge

    from paretotune.search.surrogate import bayesian_ridge

    rng = np.random.default_rng(n)
    x = rng.integers(0, 2, size=(n, width)).astype(float)  # one-hot-like columns
    y = x @ rng.normal(size=width) + 0.1 * rng.normal(size=n)
    coef, intercept, sigma = bayesian_ridge(x, y)
    theirs = BayesianRidge().fit(x, y)
    assert np.allclose(coef, theirs.coef_, rtol=1e-6, atol=1e-9)
    assert intercept == pytest.approx(theirs.intercept_, rel=1e-6, abs=1e-9)
    assert np.allclose(sigma, theirs.sigma_, rtol=1e-6, atol=1e-9)
