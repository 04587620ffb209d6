"""A sampler's proposal of an already measured config is answered, not measured again."""

from __future__ import annotations

import random

import pytest

import paretotune as pt
from paretotune.errors import ConfigError
from paretotune.search.proposals import MAX_DUPLICATE_STREAK
from paretotune.testing import FakeEvaluator

OBJECTIVES = {"latency_p50_ms": "min", "accuracy": "max"}


def small_space() -> pt.SearchSpace:  # 3 x 4 = 12 configs
    return pt.SearchSpace({"batch_size": pt.Choice([1, 2, 4]), "bit_width": pt.Choice([4, 8, 16, 32])})


def drive(study: pt.Study, n: int) -> None:
    """What a worker does, without processes: ask, evaluate, tell, until n are measured."""
    evaluator = FakeEvaluator()
    while study.counts()["COMPLETE"] < n:
        pending = study.ask()
        study.tell(pending, evaluator(pending.config))


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_measured_configs_are_reused_and_the_budget_goes_to_new_ones(storage_url, sampler) -> None:
    study = pt.create_study("d", storage_url, space=small_space(), objectives=OBJECTIVES,
                            sampler=sampler, seed=1)
    drive(study, 10)
    done = [t for t in study.trials if t.state == pt.TrialState.COMPLETE]
    assert len({t.config.hash for t in done}) == 10  # ten distinct configs measured
    assert len(study.store.measurements("d")) == 10  # and nothing else was evaluated
    duplicates = [t for t in study.trials if t.state == pt.TrialState.DUPLICATE]
    assert duplicates, "with 10 of 12 configs measured the sampler re-proposes some"
    by_number = {t.number: t for t in done}
    for t in duplicates:
        original = by_number[t.duplicate_of]
        assert t.config == original.config and t.metrics == original.metrics
        assert t.duplicate_of < t.number
    assert study.counts()["DUPLICATE"] == len(duplicates)
    front = study.pareto_front()
    assert len(front) and all(t.state == pt.TrialState.COMPLETE for t in front)


def test_an_exhausted_space_is_measured_again(storage_url) -> None:
    study = pt.create_study("x", storage_url, space=small_space(), objectives=OBJECTIVES,
                            sampler="random", seed=2)
    drive(study, 15)  # more than the 12 configs: three must be repeats
    done = [t for t in study.trials if t.state == pt.TrialState.COMPLETE]
    assert len(done) == 15 and len({t.config.hash for t in done}) == 12
    # once a step off finds nothing untried, repeats are measured without more answering
    answered = study.counts()["DUPLICATE"]
    drive(study, 40)
    assert study.counts()["DUPLICATE"] == answered


def test_measure_policy_and_enqueued_configs_measure_again(storage_url) -> None:
    study = pt.create_study("m", storage_url, space=small_space(), objectives=OBJECTIVES,
                            sampler="random", seed=3, duplicates="measure")
    drive(study, 20)
    assert study.counts()["DUPLICATE"] == 0
    reuse = pt.create_study("e", storage_url, space=small_space(), objectives=OBJECTIVES,
                            sampler="random", seed=3, warm_start="none")
    drive(reuse, 1)  # the baseline
    reuse.enqueue(reuse.space.baseline())  # asked for by the user: measured though known
    drive(reuse, 2)
    done = [t for t in reuse.trials if t.state == pt.TrialState.COMPLETE]
    assert done[0].config == done[1].config


def test_a_sampler_stuck_on_measured_configs_is_stepped_to_a_neighbour(storage_url) -> None:
    space = pt.SearchSpace({"x": pt.Int(0, 30), "y": pt.Int(0, 30)})
    # baseline "low": the fake evaluator reads x as a model knob, valid near 0 only
    study = pt.create_study("s", storage_url, space=space, objectives=OBJECTIVES,
                            sampler="grid", seed=0, baseline="low")
    drive(study, 2)
    # a user enqueueing the same point again and again stands in for a stuck sampler
    for _ in range(MAX_DUPLICATE_STREAK + 1):
        study._optuna.enqueue_trial(study.space.to_params(study.trials[1].config))
    drive(study, 3)
    steps = [t for t in study._optuna.get_trials() if "steps_off" in t.user_attrs]
    assert len(steps) == 1
    measured = [t for t in study.trials if t.state == pt.TrialState.COMPLETE]
    assert len({t.config.hash for t in measured}) == 3


def test_bad_policy_is_refused(storage_url) -> None:
    with pytest.raises(ConfigError, match=r"duplicates must be one of \['reuse', 'measure'\], got 'skip'"):
        pt.create_study("b", storage_url, space=small_space(), objectives=OBJECTIVES,
                        duplicates="skip")


def test_neighbour_changes_one_param_and_stays_valid() -> None:
    space = pt.SearchSpace(
        {
            "engine": pt.Choice(["torch", "onnxruntime"]),
            "bit_width": pt.Choice([8, 32]),
            "quant_mode": pt.Choice(["dynamic", "static"], when={"bit_width": 8}),
            "batch_size": pt.Choice([1, 8, 32]),
        },
        forbidden=[{"engine": "torch", "quant_mode": "static"}],
    )
    rng = random.Random(0)
    start = space.config({"engine": "onnxruntime", "bit_width": 8, "quant_mode": "static", "batch_size": 8})
    seen = set()
    for _ in range(200):
        n = space.neighbor(start, rng)
        assert space.violation(n.to_dict()) is None
        changed = {k for k in set(n.to_dict()) | set(start.to_dict()) if n.to_dict().get(k) != start.to_dict().get(k)}
        # one param redrawn; a bit width change also drops (or redraws) the quant mode it governs
        assert changed and (len(changed) == 1 or changed <= {"bit_width", "quant_mode"})
        seen.add(n.hash)
    assert len(seen) >= 4


def test_replacements_of_forbidden_proposals_are_untried_configs(storage_url) -> None:
    space = pt.SearchSpace(
        {"engine": pt.Choice(["torch", "onnxruntime"]), "bit_width": pt.Choice([32, 16, 8, 4]),
         "batch_size": pt.Choice([1, 2, 4, 8, 16, 32])},
        forbidden=[{"engine": "torch", "bit_width": 4}, {"engine": "onnxruntime", "bit_width": 16}],
    )  # 36 valid configs
    study = pt.create_study("r", storage_url, space=space, objectives=OBJECTIVES,
                            sampler="random", seed=4, warm_start="none")
    drive(study, 20)
    frozen = study.optuna_study.trials
    replacements = [ft for ft in frozen if "replaces_invalid" in ft.user_attrs]
    assert replacements, "the random sampler lands on a forbidden pair now and then"
    for ft in replacements:
        earlier = [f.params for f in frozen if f.number < ft.number]
        assert ft.params not in earlier


def test_a_store_failure_while_answering_a_duplicate_leaves_no_trial_running(storage_url, monkeypatch) -> None:
    import sqlalchemy as sa

    study = pt.create_study("o", storage_url, space=small_space(), objectives=OBJECTIVES,
                            sampler="random", seed=1, warm_start="none")
    drive(study, 12)  # every config measured: the next proposal is a duplicate

    def lost_connection(*args, **kwargs):
        raise sa.exc.OperationalError("UPDATE trials", {}, Exception("server closed the connection"))

    monkeypatch.setattr(study._proposals, "_answer_duplicate", lost_connection)
    with pytest.raises(sa.exc.OperationalError):
        study.ask()
    assert study.counts()["RUNNING"] == 0
    failed = [t for t in study.trials if t.state == pt.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].reason.startswith("store connection lost while sampling")
