from __future__ import annotations

import pytest

import paretotune as pt
from paretotune.search.samplers import register_sampler, sampler_names
from paretotune.testing import FakeEvaluator

OBJECTIVES = {
    2: {"latency_p50_ms": "min", "accuracy": "max"},
    3: {"latency_p50_ms": "min", "accuracy": "max", "model_bytes": "min"},
}


def run_inline(study: pt.Study, n: int) -> list[pt.Trial]:
    """Ask/tell in this process: sampler behaviour without worker processes."""
    evaluate = FakeEvaluator()
    for _ in range(n):
        pending = study.ask()
        study.tell(pending, evaluate(pending.config))
    return study.trials


@pytest.mark.parametrize("n_obj", [2, 3])
@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "nsga3", "gp", "random", "grid", "surrogate"])
def test_every_sampler_handles_two_and_three_objectives_and_is_seedable(
    tmp_path, toy_space, sampler: str, n_obj: int
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    sampler_spec = {"name": sampler, "n_startup_trials": 4} if sampler in ("tpe", "gp", "surrogate") else sampler
    if sampler in ("nsga2", "nsga3"):
        sampler_spec = {"name": sampler, "population_size": 4}
    runs = []
    for run in range(2):
        study = pt.create_study(
            f"{sampler}-{n_obj}-{run}", url, space=toy_space, objectives=OBJECTIVES[n_obj],
            constraints={"accuracy_drop": ("<=", 0.05)}, sampler=sampler_spec, seed=7,
        )
        trials = run_inline(study, 12)
        assert sum(t.state == pt.TrialState.COMPLETE for t in trials) == 12
        assert study.optuna_study.metric_names == list(OBJECTIVES[n_obj])
        assert len(study.pareto_front()) >= 1
        runs.append([t.config for t in trials])
    assert runs[0] == runs[1], "same seed, same sequence of configs"


def test_unknown_sampler_lists_valid_ones(tmp_path, toy_space) -> None:
    with pytest.raises(pt.ConfigError) as err:
        pt.create_study("x", f"sqlite:///{tmp_path}/s.db", space=toy_space,
                        objectives=OBJECTIVES[2], sampler="hyperband")
    msg = str(err.value)
    assert "'hyperband'" in msg and all(name in msg for name in ["tpe", "nsga2", "nsga3", "gp", "random", "grid", "surrogate"])


def test_bad_sampler_option_is_named(tmp_path, toy_space) -> None:
    with pytest.raises(pt.ConfigError, match="nsga2.*populaton_size"):
        pt.create_study("x", f"sqlite:///{tmp_path}/s.db", space=toy_space, objectives=OBJECTIVES[2],
                        sampler={"name": "nsga2", "populaton_size": 3})


def test_duplicate_registration_is_an_error() -> None:
    with pytest.raises(pt.ConfigError, match="already registered"):
        register_sampler("tpe", lambda **kw: None)
    assert "tpe" in sampler_names()
