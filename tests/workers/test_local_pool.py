from __future__ import annotations

import pytest

import paretotune as pt
from paretotune.search.study import MISSING_METRIC_STOP_AFTER
from paretotune.storage import StopKind
from paretotune.testing import FakeEvaluator, null_evaluator
from paretotune.workers.reaper import UNCLAIMED_REASON

import helpers_eval
from helpers_eval import flaky_ask


def test_failing_trials_are_recorded_with_reasons_and_the_study_goes_on(tmp_path) -> None:
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.01, default=0.0)})
    study = pt.create_study("faults", f"sqlite:///{tmp_path}/f.db", space=space,
                            objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler="random", seed=3)
    for x in (0.01, 0.02, 0.03, 0.04):
        study.enqueue({"x": x})
    study.optimize(helpers_eval.misbehaving, n_trials=10, n_workers=2, timeout_s=4)
    # the enqueued trial of each failure (a later proposal of the same x may be answered INVALID:
    # a config that failed twice is not measured again)
    by_x: dict[float, pt.Trial] = {}
    for t in study.trials:
        if t.config is not None and t.config["x"] in helpers_eval.FAILURES:
            by_x.setdefault(t.config["x"], t)
    assert by_x[0.01].state == pt.TrialState.FAIL and by_x[0.01].reason == "ValueError: bad weights in layer 3"
    assert by_x[0.02].state == pt.TrialState.FAIL and by_x[0.02].reason == "trial process exited with code 3 before returning a result"
    assert by_x[0.03].state == pt.TrialState.FAIL and by_x[0.03].reason == "timeout after 4 s"
    assert by_x[0.04].state == pt.TrialState.FAIL and by_x[0.04].reason == "metric 'accuracy' is nan"
    counts = study.counts()
    assert counts["COMPLETE"] == 10 and counts["RUNNING"] == 0 and counts["WAITING"] == 0
    # nothing fake was stored for the failures
    assert all(not t.metrics for t in study.trials if t.state == pt.TrialState.FAIL)
    assert len(study.store.measurements("faults")) == 10


@pytest.mark.postgres
def test_four_workers_fifty_trials_each_on_postgres(pg_url: str, toy_space) -> None:
    study = pt.create_study("many", pg_url, space=toy_space,
                            objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler="random", seed=1)
    study.optimize(FakeEvaluator(), n_trials=200, n_workers=4)
    trials = study.trials
    complete = [t for t in trials if t.state == pt.TrialState.COMPLETE]
    assert len(complete) == 200
    assert len({t.number for t in complete}) == 200
    assert not [t for t in trials if t.state in (pt.TrialState.RUNNING, pt.TrialState.WAITING, pt.TrialState.FAIL)]
    assert sorted(m["trial_number"] for m in study.store.measurements("many")) == sorted(t.number for t in complete)
    assert study.store.claim_counts("many") == {"active": 0, "done": 200, "released": 0}


def test_budget_is_a_total_so_a_second_call_resumes(tmp_path, toy_space) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    study = pt.create_study("r", url, space=toy_space, objectives=["latency_p50_ms", "accuracy"], seed=0)
    study.optimize(null_evaluator, n_trials=5)
    again = pt.load_study("r", url)
    again.optimize(null_evaluator, n_trials=5)  # already met: nothing runs
    assert again.counts()["COMPLETE"] == 5
    again.optimize(null_evaluator, n_trials=8)
    assert again.counts()["COMPLETE"] == 8


def test_objective_the_evaluator_never_returns_stops_the_study_early(tmp_path) -> None:
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.1, default=0.0)})
    study = pt.create_study("noacc", f"sqlite:///{tmp_path}/n.db", space=space,
                            objectives={"latency_p50_ms": "min", "accuracy": "max"})
    with pytest.raises(pt.StudyError) as err:
        study.optimize(helpers_eval.no_accuracy, n_trials=50, n_workers=2)
    assert "did not return ['accuracy']" in str(err.value)
    # MISSING_METRIC_STOP_AFTER evaluations, plus the other worker's trial in flight; not 50
    assert MISSING_METRIC_STOP_AFTER <= study.counts()["FAIL"] <= MISSING_METRIC_STOP_AFTER + 1


def test_baseline_runs_first_and_relative_metrics_use_it(tmp_path, toy_space) -> None:
    study = pt.create_study("b", f"sqlite:///{tmp_path}/b.db", space=toy_space,
                            objectives={"speedup": "max", "accuracy_drop": "min"},
                            constraints={"accuracy_drop": ("<=", 0.01)}, seed=0)
    study.optimize(FakeEvaluator(), n_trials=15, n_workers=2)
    first = study.trials[0]
    assert first.is_baseline and first.state == pt.TrialState.COMPLETE
    assert first.config == toy_space.baseline()
    assert first.metrics["accuracy_drop"] == 0.0
    for t in study.completed():
        assert t.metrics["accuracy_drop"] == pytest.approx(first.metrics["accuracy"] - t.metrics["accuracy"])
        assert t.metrics["speedup"] == pytest.approx(t.metrics["baseline_latency_p50_ms"] / t.metrics["latency_p50_ms"])
        if t.config["batch_size"] == first.config["batch_size"]:
            assert t.metrics["speedup"] == pytest.approx(first.metrics["latency_p50_ms"] / t.metrics["latency_p50_ms"])
    # infeasible trials are kept, but never on the front
    infeasible = [t for t in study.completed() if not t.feasible]
    front = study.pareto_front()
    assert all(t.feasible for t in front)
    assert not {t.number for t in infeasible} & {t.number for t in front}


def test_speedup_without_a_reference_timed_beside_the_trial_fails_the_trial_with_why(tmp_path) -> None:
    space = pt.SearchSpace({"batch_size": pt.Choice([1, 8]), "x": pt.Choice([0.0, 0.1])})
    study = pt.create_study("sp", f"sqlite:///{tmp_path}/sp.db", space=space,
                            objectives={"speedup": "max", "accuracy": "max"}, sampler="random", seed=0,
                            warm_start="none")
    study.optimize(helpers_eval.no_baseline_latency, n_trials=1)
    assert study.trials[0].metrics["speedup"] == 1.0  # the baseline against itself
    # neither at another batch size nor at the baseline's own: another trial's latency, timed
    # in another process at another time, is never the reference
    study.enqueue({"batch_size": 8, "x": 0.0})
    study.enqueue({"batch_size": 1, "x": 0.1})
    for _ in range(2):
        pending = study.ask()
        study.tell(pending, helpers_eval.no_baseline_latency(pending.config))
    failed = [t for t in study.trials if t.state == pt.TrialState.FAIL]
    assert [t.config["batch_size"] for t in failed] == [8, 1]
    assert all("speedup needs a reference timed in the same process" in t.reason for t in failed)


def test_grid_ends_the_study_when_the_space_is_exhausted(tmp_path) -> None:
    space = pt.SearchSpace({"batch_size": pt.Choice([1, 2, 4]), "bit_width": pt.Choice([8, 32])})
    study = pt.create_study("g", f"sqlite:///{tmp_path}/g.db", space=space,
                            objectives=["latency_p50_ms", "accuracy"], sampler="grid")
    study.optimize(FakeEvaluator(), n_trials=50)
    configs = [t.config for t in study.completed()]
    assert len(configs) == 6 and set(configs) == set(space.grid())
    assert study.store.stopped("g").kind is StopKind.FINISHED


def test_queued_trials_are_never_taken_twice_on_sqlite(tmp_path) -> None:
    # SQLite ignores row locks; without serialized writes two workers can pop the same queued
    # trial (the baseline, an enqueued config) and both run it.
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.01, default=0.0)})
    study = pt.create_study("q", f"sqlite:///{tmp_path}/q.db", space=space,
                            objectives=["latency_p50_ms", "accuracy"], sampler="random", seed=0)
    for i in range(1, 31):
        study.enqueue({"x": i / 100})
    study.optimize(helpers_eval.instant_x, n_trials=40, n_workers=4)
    done = study.completed()
    assert len(done) == 40
    claims = study.store.claim_counts("q")
    assert claims["done"] == 40 and claims["active"] == 0
    from sqlalchemy import select

    from paretotune.storage.store import claims_table
    with study.store.engine.connect() as conn:
        bound = [r[0] for r in conn.execute(select(claims_table.c.trial_number))]
    assert len(bound) == len(set(bound)), "a trial was claimed by two workers"


def test_a_trial_orphaned_by_a_failed_ask_is_settled_when_the_budget_is_met(tmp_path, monkeypatch) -> None:
    """The store fails after Optuna created a trial: the retried ask leaves that trial without a
    claim, and a study that meets its budget before the grace period ends does not keep it RUNNING."""
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.01, default=0.0)})
    study = pt.create_study("orphan", f"sqlite:///{tmp_path}/o.db", space=space,
                            objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler="random", seed=3)
    asked = flaky_ask(monkeypatch, fail_on_call=2)
    study.optimize(null_evaluator, n_trials=3)
    counts = study.counts()
    assert counts["COMPLETE"] == 3 and counts["RUNNING"] == 0, counts
    assert study.trial(asked[1]).state == pt.TrialState.FAIL and study.trial(asked[1]).reason == UNCLAIMED_REASON


def test_a_seeded_study_run_by_one_worker_proposes_the_same_configs_every_time(tmp_path, toy_space) -> None:
    """The sampler's seed comes from the study's seed and the worker's seed stream (`local-0`),
    not from the worker's process id: two fresh runs of the same seeded study agree."""
    runs = []
    for i in range(2):
        study = pt.create_study("seeded", f"sqlite:///{tmp_path}/run{i}.db", space=toy_space,
                                objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler="tpe", seed=7)
        study.optimize(FakeEvaluator(), n_trials=12)
        runs.append([dict(t.config) for t in study.trials if t.config is not None])
    assert len(runs[0]) >= 12 and runs[0] == runs[1]
    other = pt.create_study("seeded", f"sqlite:///{tmp_path}/other.db", space=toy_space,
                            objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler="tpe", seed=8)
    other.optimize(FakeEvaluator(), n_trials=12)
    assert [dict(t.config) for t in other.trials if t.config is not None] != runs[0]  # the seed matters
