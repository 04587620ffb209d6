"""A new study measures the corners of engine x bit width right after its baseline."""

from __future__ import annotations

import math

import pytest

import paretotune as pt
from paretotune.errors import ConfigError
from paretotune.search.proposals import warm_start_configs
from paretotune.testing import FakeEvaluator

OBJECTIVES = {"latency_p50_ms": "min", "accuracy": "max"}
LAYERS = {"conv1": "Conv2d", "fc1": "Linear", "fc2": "Linear"}


def space() -> pt.SearchSpace:
    return pt.SearchSpace(
        {
            "engine": pt.Choice(["torch", "onnxruntime"]),
            "bit_width": pt.Choice([32, 8, 4]),
            "batch_size": pt.Choice([1, 8]),
            "quant_mode": pt.Choice(["dynamic", "static"], when={"engine": "onnxruntime", "bit_width": 8}),
            "precision": pt.PerLayer(["int8", "fp32"], layers=LAYERS, when={"bit_width": 8}),
        },
        forbidden=[{"engine": "torch", "bit_width": 4}],
    )


def test_corners_are_every_buildable_engine_and_bit_width_with_defaults_elsewhere() -> None:
    corners = warm_start_configs(space())
    pairs = [(c["engine"], c["bit_width"]) for c in corners]
    # torch/32 is the baseline, torch/4 is forbidden
    assert pairs == [("torch", 8), ("onnxruntime", 32), ("onnxruntime", 8), ("onnxruntime", 4)]
    for c in corners:
        assert c["batch_size"] == 1
        if c["bit_width"] == 8:
            assert set(c["precision"].values()) == {"int8"}  # the PerLayer default: all quantized
    assert next(c for c in corners if pairs[corners.index(c)] == ("onnxruntime", 8))["quant_mode"] == "dynamic"
    assert warm_start_configs(pt.SearchSpace({"x": pt.Float(0.0, 1.0)})) == []


def test_a_new_study_measures_them_after_the_baseline(storage_url) -> None:
    study = pt.create_study("w", storage_url, space=space(), objectives=OBJECTIVES, seed=0)
    evaluator = FakeEvaluator()
    for _ in range(5):
        pending = study.ask()
        study.tell(pending, evaluator(pending.config))
    done = study.trials
    assert done[0].is_baseline
    assert [t.config for t in done[1:5]] == warm_start_configs(study.space)
    # reopening the study queues nothing again
    again = pt.load_study("w", storage_url)
    assert not [t for t in again.trials if t.state == pt.TrialState.WAITING]
    pt.create_study("w", storage_url, space=space(), objectives=OBJECTIVES, seed=0)
    assert not [t for t in again.trials if t.state == pt.TrialState.WAITING]


def test_none_leaves_the_start_to_the_sampler_and_bad_values_are_refused(storage_url) -> None:
    study = pt.create_study("n", storage_url, space=space(), objectives=OBJECTIVES,
                            warm_start="none")
    assert [t.is_baseline for t in study.trials] == [True]
    with pytest.raises(ConfigError, match=r"warm_start must be one of \['corners', 'none', 'cover'\], got 'all'"):
        pt.create_study("b", storage_url, space=space(), objectives=OBJECTIVES, warm_start="all")


def test_cover_puts_every_value_of_every_dimension_in_the_start_and_is_seeded() -> None:
    from paretotune.search.start import cover_configs

    big = pt.SearchSpace({**space().dimensions, "prune_ratio": pt.Float(0.0, 0.5, step=0.1),
                          "lr": pt.Float(1e-4, 1e-1, log=True)}, forbidden=[{"engine": "torch", "bit_width": 4}])
    rows = cover_configs(big, seed=3)
    assert len(rows) == 6  # the largest dimension (prune_ratio) has 6 values
    for name in ("engine", "bit_width", "batch_size", "prune_ratio"):
        assert {r[name] for r in rows} == set(big.dimensions[name].values()), name
    assert not [r for r in rows if r["engine"] == "torch" and r["bit_width"] == 4]  # forbidden
    # the continuous dimension gets one point in each of six log strata (a Latin hypercube)
    strata = sorted(int(6 * (math.log(r["lr"]) - math.log(1e-4)) / (math.log(1e-1) - math.log(1e-4))) for r in rows)
    assert strata == list(range(6))
    assert rows == cover_configs(big, seed=3) and rows != cover_configs(big, seed=4)
    assert cover_configs(pt.SearchSpace({"x": pt.Float(0.0, 1.0)}), seed=0) == []


def test_a_cover_study_queues_the_corners_then_the_design(storage_url) -> None:
    from paretotune.search.start import cover_configs

    study = pt.create_study("c", storage_url, space=space(), objectives=OBJECTIVES, seed=1,
                            warm_start="cover")
    corners = warm_start_configs(study.space)
    design = cover_configs(study.space, 1, [study.baseline_config(), *corners])
    start = [study.baseline_config(), *corners, *design]
    assert design and {c["batch_size"] for c in start} == {1, 8}
    assert design[0]["batch_size"] == 8  # the value the baseline and the corners lack comes first
    evaluator = FakeEvaluator()
    for _ in range(1 + len(corners) + len(design)):
        pending = study.ask()
        study.tell(pending, evaluator(pending.config))
    assert [t.config for t in study.trials] == start
