from __future__ import annotations

import pytest

import paretotune as pt
from paretotune.testing import FakeEvaluator

OBJ = {"latency_p50_ms": "min", "accuracy": "max"}


def _inline(study: pt.Study, n: int) -> None:
    ev = FakeEvaluator()
    for _ in range(n):
        p = study.ask()
        study.tell(p, ev(p.config))


def test_create_load_and_resume_on_both_backends(storage_url: str, toy_space) -> None:
    study = pt.create_study("s", storage_url, space=toy_space, objectives=OBJ,
                            constraints={"accuracy_drop": ("<=", 0.01)}, seed=0)
    _inline(study, 6)
    again = pt.load_study("s", storage_url)
    assert again.space == toy_space and again.objectives == OBJ
    assert [t.to_dict() for t in again.trials] == [t.to_dict() for t in study.trials]
    assert again.optuna_study.metric_names == ["latency_p50_ms", "accuracy"]
    # same name, same spec: reopened; different spec: refused unless asked
    same = pt.create_study("s", storage_url, space=toy_space, objectives=OBJ,
                           constraints={"accuracy_drop": ("<=", 0.01)}, seed=0)
    assert len(same.completed()) == 6
    with pytest.raises(pt.StudyError, match=r"different spec \(differs in: objectives\)"):
        pt.create_study("s", storage_url, space=toy_space, objectives={"accuracy": "max"},
                        constraints={"accuracy_drop": ("<=", 0.01)}, seed=0)
    loaded = pt.create_study("s", storage_url, space=toy_space, objectives={"accuracy": "max"}, seed=0,
                             constraints={"accuracy_drop": ("<=", 0.01)}, load_if_exists=True)
    assert loaded.objectives == OBJ  # the stored spec wins


def test_load_missing_study_lists_what_is_there(storage_url: str, toy_space) -> None:
    pt.create_study("present", storage_url, space=toy_space, objectives=OBJ)
    with pytest.raises(pt.StudyError, match=r"no study named 'absent'.*\['present'\]"):
        pt.load_study("absent", storage_url)


def test_unknown_objective_lists_known_metrics(tmp_path, toy_space) -> None:
    with pytest.raises(pt.ConfigError) as err:
        pt.create_study("x", f"sqlite:///{tmp_path}/x.db", space=toy_space, objectives={"latency_ms": "min"})
    assert "unknown metric 'latency_ms'" in str(err.value) and "latency_p50_ms" in str(err.value)
    with pytest.raises(pt.ConfigError, match="direction must be 'min' or 'max'"):
        pt.create_study("x", f"sqlite:///{tmp_path}/x.db", space=toy_space, objectives={"accuracy": "up"})
    with pytest.raises(pt.ConfigError, match="operator must be one of"):
        pt.create_study("x", f"sqlite:///{tmp_path}/x.db", space=toy_space, objectives=OBJ,
                        constraints={"accuracy_drop": ("<", 0.1)})
    # a declared extra metric is fine
    pt.create_study("y", f"sqlite:///{tmp_path}/x.db", space=toy_space, objectives={"loss": "min"},
                    extra_metrics=["loss"])


def test_infeasible_trials_are_kept_but_never_on_the_front(tmp_path, toy_space) -> None:
    study = pt.create_study("c", f"sqlite:///{tmp_path}/c.db", space=toy_space, objectives=OBJ,
                            constraints={"accuracy_drop": ("<=", 0.005)}, sampler="random", seed=2)
    _inline(study, 40)
    done = study.completed()
    infeasible = [t for t in done if not t.feasible]
    assert infeasible, "the fake's low bit widths and pruning break the constraint"
    front = study.pareto_front()
    assert front and all(t.feasible and t.metrics["accuracy_drop"] <= 0.005 for t in front)
    # Optuna sees the constraint values too
    ft = study.optuna_study.trials[infeasible[0].number]
    assert any(k.startswith("constraints") for k in ft.system_attrs)


def test_hypervolume_history_is_monotone_and_matches_final(tmp_path, toy_space) -> None:
    study = pt.create_study("h", f"sqlite:///{tmp_path}/h.db", space=toy_space, objectives=OBJ, seed=4)
    _inline(study, 20)
    hist = [hv for _, hv in study.hypervolume_history()]
    assert all(b >= a for a, b in zip(hist, hist[1:], strict=False))
    assert hist[-1] == pytest.approx(study.hypervolume())


def test_enqueue_validates(tmp_path, toy_space) -> None:
    study = pt.create_study("e", f"sqlite:///{tmp_path}/e.db", space=toy_space, objectives=OBJ)
    with pytest.raises(pt.ConfigError, match="unknown dimension"):
        study.enqueue({"bits": 8})
    with pytest.raises(pt.InvalidConfigError, match="forbidden"):
        study.enqueue({"engine": "torch", "bit_width": 4})


def test_objective_order_survives_the_store(storage_url: str, toy_space) -> None:
    # JSON objects lose their order in the store; the objectives must not (Optuna's
    # directions and told values are positional).
    objectives = {"throughput": "max", "accuracy": "max", "latency_p50_ms": "min"}
    pt.create_study("order", storage_url, space=toy_space, objectives=objectives)
    again = pt.load_study("order", storage_url)
    assert list(again.objectives) == list(objectives)
    assert again.optuna_study.metric_names == list(objectives)
    assert [d.name for d in again.optuna_study.directions] == ["MAXIMIZE", "MAXIMIZE", "MINIMIZE"]
    _inline(again, 3)
    for ft in again.optuna_study.trials:
        if ft.values:
            assert ft.values == [ft.user_attrs["metrics"][m] for m in objectives]


def test_the_baseline_gate_caches_the_completed_baseline(tmp_path, toy_space) -> None:
    # the worker loop asks the gate before every claim: once the baseline is complete it must
    # answer without reading every trial from the store again
    study = pt.create_study("gate", f"sqlite:///{tmp_path}/g.db", space=toy_space, objectives=OBJ)
    assert study.baseline_gate()  # queued: the next ask takes it
    _inline(study, 1)
    fresh = pt.load_study("gate", f"sqlite:///{tmp_path}/g.db")
    assert fresh.baseline_gate()
    fresh._optuna.get_trials = None  # any further read of all trials would now fail
    assert fresh.baseline_gate()


def test_the_baseline_rule_follows_what_the_baseline_is_for(tmp_path) -> None:
    """Without a pt.Task and with no metric relative to the baseline, an undeclared range's
    centre is the baseline ("centre", stored with the spec); `accuracy_drop` or `speedup` make
    the baseline the reference, the lower bounds (nothing applied), as with a Task."""
    space = pt.SearchSpace({"prune_ratio": pt.Float(0.0, 0.4, step=0.1), "batch_size": pt.Int(1, 64, log=True)})
    url = f"sqlite:///{tmp_path}/b.db"
    absolute = pt.create_study("abs", url, space=space, objectives={"latency_p50_ms": "min", "accuracy": "max"})
    assert absolute.spec["baseline"] == "centre"
    assert dict(absolute.baseline_config()) == {"prune_ratio": 0.2, "batch_size": 8}
    relative = pt.create_study("rel", url, space=space, objectives={"latency_p50_ms": "min", "accuracy": "max"},
                               constraints={"accuracy_drop": ("<=", 0.01)})
    assert "baseline" not in relative.spec  # "low", stored as every older spec was
    assert dict(relative.baseline_config()) == {"prune_ratio": 0.0, "batch_size": 1}
    chosen = pt.create_study("low", url, space=space, objectives={"accuracy": "max"}, baseline="low")
    assert dict(chosen.baseline_config()) == {"prune_ratio": 0.0, "batch_size": 1}
    assert pt.load_study("abs", url).baseline_config() == absolute.baseline_config()
    # a study stored before the rule existed has no `baseline` key: run again, it keeps "low"
    again = pt.create_study("low", url, space=space, objectives={"accuracy": "max"})
    assert dict(again.baseline_config()) == {"prune_ratio": 0.0, "batch_size": 1}
    with pytest.raises(pt.ConfigError, match=r"baseline must be one of \['low', 'centre'\], got 'mid'"):
        pt.create_study("bad", url, space=space, objectives={"accuracy": "max"}, baseline="mid")


def test_a_study_starts_from_a_previous_studys_front(tmp_path, toy_space) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    source = pt.create_study("on-a", url, space=toy_space, objectives=OBJ, warm_start="none", seed=0)
    _inline(source, 12)
    front = [t.config for t in source.pareto_front()]
    assert front
    # the target space lacks one bit width of the front: those configs cannot be taken there
    gone = next(c["bit_width"] for c in front if c["bit_width"] != 32)
    narrower = pt.SearchSpace({**toy_space.dimensions,
                               "bit_width": pt.Choice([b for b in (32, 16, 8, 4) if b != gone])})
    target = pt.create_study("on-b", url, space=narrower, objectives=OBJ, warm_start="none", seed=1)
    queued = target.enqueue_front_of(source)
    takeable = [c for c in front if c["bit_width"] != gone]
    assert 0 < len(takeable) < len(front)
    assert [dict(c) for c in queued] == [dict(c) for c in takeable]
    assert target.enqueue_front_of(source) == []  # queued already: not twice
    first = [target.ask() for _ in range(1 + len(queued))]  # the baseline, then the front
    assert first[0].is_baseline
    assert [dict(p.config) for p in first[1:]] == [dict(c) for c in takeable]
    with pytest.raises(pt.ConfigError, match="limit must be an integer >= 1 or None, got 0"):
        target.enqueue_front_of(source, limit=0)
