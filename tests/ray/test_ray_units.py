"""Pieces of the Ray backend that need no cluster: options, placement arithmetic, pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import paretotune as pt
from paretotune.workers.ray_backend import (
    StudySearcher,
    concurrency_for,
    normalize_resources,
    placeable_trials,
)


def test_resources_use_rays_names_and_reject_bad_values() -> None:
    assert normalize_resources(None) == {"CPU": 1.0}
    assert normalize_resources({"cpu": 4, "gpu": 1}) == {"CPU": 4.0, "GPU": 1.0}
    assert normalize_resources({"gpu": 0.5, "accelerator_type:H100": 0.01}) == {
        "GPU": 0.5, "accelerator_type:H100": 0.01, "CPU": 1.0}
    with pytest.raises(pt.ConfigError, match=r"resources_per_trial\['cpu'\] must be a number >= 0, got -1"):
        normalize_resources({"cpu": -1})
    with pytest.raises(pt.ConfigError, match="given twice"):
        normalize_resources({"cpu": 1, "CPU": 2})
    with pytest.raises(pt.ConfigError, match="whole number, got 1.5"):
        normalize_resources({"gpu": 1.5})
    with pytest.raises(pt.ConfigError, match="must be a mapping"):
        normalize_resources("cpu=1")  # type: ignore[arg-type]


def test_placement_counts_per_node_and_caps_at_the_budget() -> None:
    nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 3.0}]
    assert placeable_trials({"CPU": 1.0}, nodes) == 11
    assert placeable_trials({"CPU": 4.0}, nodes) == 2  # 4 CPUs never straddle two nodes
    assert placeable_trials({"CPU": 1.0, "GPU": 1.0}, nodes) == 2
    assert placeable_trials({"CPU": 0.5, "GPU": 0.5}, nodes) == 4
    assert concurrency_for({"CPU": 1.0}, remaining=3, max_concurrent=None, nodes=nodes) == 3
    assert concurrency_for({"CPU": 1.0}, remaining=50, max_concurrent=5, nodes=nodes) == 5
    with pytest.raises(pt.ConfigError, match="fits on no node"):
        concurrency_for({"CPU": 1.0, "GPU": 1.0}, remaining=5, max_concurrent=None, nodes=[{"CPU": 4.0}])
    # an autoscaling cluster may have no GPU node yet: max_concurrent says how many to ask for
    assert concurrency_for({"GPU": 1.0}, remaining=5, max_concurrent=2, nodes=[{"CPU": 4.0}]) == 2


def test_unknown_backend_options_are_refused(tmp_path: Path) -> None:
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.1, default=0.0)})
    study = pt.create_study("opts", f"sqlite:///{tmp_path}/o.db", space=space, objectives=["latency_p50_ms"])
    with pytest.raises(pt.ConfigError, match=r"unknown option\(s\) \['num_gpus'\]; allowed: \['address'"):
        study.optimize(lambda c: {}, n_trials=2, backend="ray", num_gpus=1)
    with pytest.raises(pt.ConfigError, match="a paretotune evaluation reports once"):
        study.optimize(lambda c: {}, n_trials=2, backend="ray", scheduler="asha")
    with pytest.raises(pt.ConfigError, match="max_concurrent must be an integer >= 1, got 0"):
        study.optimize(lambda c: {}, n_trials=2, backend="ray", max_concurrent=0)


def test_the_searcher_pickles_to_its_settings_and_refuses_tuner_restore(tmp_path: Path) -> None:
    """Tune pickles its searcher (tuner.pkl); Tuner.restore would lose its state (ray#30861),
    so the searcher points at the store instead of pretending to restore."""
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.1, default=0.0)})
    url = f"sqlite:///{tmp_path}/p.db"
    pt.create_study("pickle", url, space=space, objectives=["latency_p50_ms"])
    searcher = StudySearcher(url, "pickle", 5)
    assert searcher.study.name == "pickle"  # opens a store, an engine, a sampler
    copy = pickle.loads(pickle.dumps(searcher))
    assert (copy.storage_url, copy.study_name, copy.n_trials, copy.driver) == (url, "pickle", 5, searcher.driver)
    assert copy.held_claims() == []
    with pytest.raises(NotImplementedError, match="ray#30861"):
        copy.restore(str(tmp_path / "ckpt"))
