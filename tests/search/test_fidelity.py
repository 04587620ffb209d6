"""paretotune's wrapper adds no bias of its own to a sampler: on a continuous space its random
search proposes what Optuna's RandomSampler proposes with the same seed, and the baseline
trial reaches the sampler as one observation like any other (benchmarks/sampler_fidelity.py
measures the rest)."""

from __future__ import annotations

import optuna
import pytest

import paretotune as pt
from paretotune.search.samplers import make_sampler, worker_seed

SPACE = pt.SearchSpace({
    "a": pt.Float(0.0, 1.0),
    "b": pt.Float(-2.0, 3.0),
    "c": pt.Float(1e-3, 1.0, log=True),
    "n": pt.Int(1, 16),
})
NAMES = ["f1", "f2"]


def _metrics(config: pt.Config) -> dict[str, float]:
    return {"f1": config["a"] + config["b"] / 5, "f2": (1 - config["a"]) * config["c"] + config["n"] / 16}


def _study(tmp_path, sampler: str, seed: int = 3) -> pt.Study:
    return pt.create_study(
        "fidelity", f"sqlite:///{tmp_path}/s.db", space=SPACE, objectives={n: "min" for n in NAMES},
        extra_metrics=NAMES, sampler=sampler, seed=seed,
    )


def test_a_callable_study_measures_the_centre_of_undeclared_ranges_first(tmp_path) -> None:
    """Without a pt.Task no dimension has an "unmodified" value, so one that declares no
    default starts at the centre of its range (geometric on a log scale), not at the lower
    corner, an extreme point that multi-objective samplers are drawn to."""
    study = _study(tmp_path, "random")
    assert study.spec["baseline"] == "centre"
    assert dict(study.baseline_config()) == {"a": 0.5, "b": 0.5, "c": pytest.approx(10**-1.5, rel=1e-11), "n": 8}
    assert dict(study.ask().config) == dict(study.baseline_config())
    # a config enqueued with dimensions left out fills them under the same rule
    queued = study.enqueue({"a": 0.1})
    assert dict(queued) == {**dict(study.baseline_config()), "a": 0.1}


def test_random_proposes_what_optunas_random_sampler_proposes(tmp_path) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = _study(tmp_path, "random")
    ours = []
    for _ in range(12):
        pending = study.ask()
        ours.append(dict(pending.config))
        study.tell(pending, _metrics(pending.config))
    plain = optuna.create_study(directions=["minimize"] * 2, sampler=make_sampler("random", seed=worker_seed(3, "main")))
    theirs = []
    for _ in range(11):
        trial = plain.ask()
        config = SPACE.suggest(trial)
        theirs.append(dict(config))
        plain.tell(trial, [_metrics(config)[n] for n in NAMES])
    # trial 0 is the baseline (enqueued: it draws nothing from the sampler); after it, the
    # same configs in the same order, up to the canonical form's 12 significant digits
    assert ours[0] == dict(study.baseline_config())
    assert len(ours[1:]) == len(theirs)
    for mine, other in zip(ours[1:], theirs, strict=True):
        assert mine.keys() == other.keys()
        for key in mine:
            assert mine[key] == pytest.approx(other[key], rel=1e-11, abs=1e-12)


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_the_baseline_is_told_as_an_observation_like_any_other(tmp_path, sampler: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = _study(tmp_path, sampler)
    for _ in range(3):
        pending = study.ask()
        study.tell(pending, _metrics(pending.config))
    frozen = study.optuna_study.get_trials(deepcopy=False)
    base, other = frozen[0], frozen[1]
    assert base.user_attrs.get("baseline") is True and not other.user_attrs.get("baseline")
    # what a sampler reads of a trial: its state, its values, its params and distributions,
    # its constraints; the baseline's are of the same kind as any proposal's
    assert base.state == other.state == optuna.trial.TrialState.COMPLETE
    assert base.values == [_metrics(study.baseline_config())[n] for n in NAMES]
    assert base.distributions == other.distributions
    assert base.constraints == other.constraints == {}
    assert set(base.system_attrs) <= set(other.system_attrs) | {"fixed_params"}
    # and it is one of the observations the sampler learns from
    seen = study.optuna_study._get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.number for t in seen] == [0, 1, 2]


@pytest.mark.parametrize("sampler", [{"name": "tpe", "n_startup_trials": 4}, {"name": "nsga2", "population_size": 4}])
def test_model_based_samplers_propose_what_optuna_proposes_after_the_same_baseline(tmp_path, sampler) -> None:
    """Past the start-up, too: given the same first trial (the baseline), Optuna's sampler
    makes the same proposals. A proposal of a config measured before (NSGA-II's crossover
    copies a parent) is answered from the store, told with the same values and not counted
    in the budget, where plain Optuna measures it again."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = pt.create_study(
        "model", f"sqlite:///{tmp_path}/s.db", space=SPACE, objectives={n: "min" for n in NAMES},
        extra_metrics=NAMES, sampler=sampler, seed=5,
    )
    for _ in range(14):
        pending = study.ask()
        study.tell(pending, _metrics(pending.config))
    ours = study.optuna_study.get_trials(deepcopy=False)
    plain = optuna.create_study(directions=["minimize"] * 2, sampler=make_sampler(sampler, seed=worker_seed(5, "main")))
    plain.enqueue_trial(SPACE.to_params(study.baseline_config()))
    for _ in range(len(ours)):
        trial = plain.ask()
        config = SPACE.suggest(trial)
        plain.tell(trial, [_metrics(config)[n] for n in NAMES])
    theirs = plain.get_trials(deepcopy=False)
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.params == pytest.approx(other.params, rel=1e-11, abs=1e-12)
        assert mine.values == pytest.approx(other.values, rel=1e-11, abs=1e-12)
    answered = [t for t in ours if t.user_attrs.get("duplicate_of") is not None]
    assert len(ours) == 14 + len(answered)
    if sampler["name"] == "nsga2":
        assert answered  # this seed's crossover copies a parent (trial 11 repeats trial 3)
