from __future__ import annotations

import random

import pytest

import paretotune as pt
from paretotune.space.dimensions import dimension_from_dict


def test_bounds_are_inclusive_everywhere() -> None:
    f = pt.Float(0.0, 0.6, step=0.1)
    assert f.values()[0] == 0.0 and f.values()[-1] == 0.6 and len(f.values()) == 7
    assert f.validate("p", 0.6) == 0.6
    i = pt.Int(1, 64, log=True)
    assert i.validate("b", 64) == 64 and i.validate("b", 1) == 1
    rng = random.Random(0)
    draws = {pt.Int(1, 3).sample(rng) for _ in range(200)}
    assert draws == {1, 2, 3}


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: pt.Float(1.0, 0.0), "`low <= high` must hold, but got (low=1.0, high=0.0)"),
        (lambda: pt.Float(0.0, 1.0, step=0.3), "multiple of `step`"),
        (lambda: pt.Float(0.0, 1.0, log=True), "`low > 0` must hold with log=True"),
        (lambda: pt.Int(5, 1), "`low <= high` must hold, but got (low=5, high=1)"),
        (lambda: pt.Int(0, 8, log=True), "`low >= 1` must hold with log=True"),
        (lambda: pt.Int(1, 8, step=2, log=True), "step"),
        (lambda: pt.Choice([]), "must not be empty"),
        (lambda: pt.Choice(["a", "a"]), "must be unique"),
        (lambda: pt.PerLayer(["int8"], granularity="weird"), "granularity"),
    ],
)
def test_bad_dimensions_say_what_they_got(make, fragment) -> None:
    with pytest.raises(pt.ConfigError) as err:
        make()
    assert fragment in str(err.value)


def test_validate_names_field_value_and_allowed() -> None:
    with pytest.raises(pt.ConfigError, match=r"`prune_ratio` must be in \[0.0, 0.6\] \(inclusive\), got 0.7"):
        pt.Float(0.0, 0.6).validate("prune_ratio", 0.7)
    with pytest.raises(pt.ConfigError, match=r"`engine` must be one of \['torch', 'onnxruntime'\], got 'tvm'"):
        pt.Choice(["torch", "onnxruntime"]).validate("engine", "tvm")
    # bool is not an int here
    with pytest.raises(pt.ConfigError):
        pt.Choice([1, 2]).validate("x", True)


def test_per_layer_granularity_groups() -> None:
    layers = {
        "encoder.layer.0.attention.query": "Linear",
        "encoder.layer.0.output.dense": "Linear",
        "encoder.layer.1.attention.query": "Linear",
        "pooler.dense": "Linear",
        "conv1": "Conv2d",
    }
    by_layer = pt.PerLayer(["int8", "fp32"], layers=layers)
    assert len(by_layer.groups()) == 5
    by_block = pt.PerLayer(["int8", "fp32"], layers=layers, granularity="block")
    assert by_block.groups() == {
        "encoder.layer.0": ["encoder.layer.0.attention.query", "encoder.layer.0.output.dense"],
        "encoder.layer.1": ["encoder.layer.1.attention.query"],
        "pooler": ["pooler.dense"],
        "conv1": ["conv1"],
    }
    by_type = pt.PerLayer(["int8", "fp32"], layers=layers, granularity="type")
    assert set(by_type.groups()) == {"Linear", "Conv2d"}
    assert len(by_type.values()) == 4  # 2 choices ** 2 groups
    # a config must give one choice per group
    mixed = {k: "int8" for k in layers} | {"encoder.layer.0.output.dense": "fp32"}
    with pytest.raises(pt.ConfigError, match="must share one choice"):
        by_block.validate("precision", mixed)


def test_unbound_per_layer_says_how_to_bind() -> None:
    with pytest.raises(pt.ConfigError, match="not bound"):
        pt.PerLayer(["int8", "fp32"]).groups()


def test_dimension_dict_rejects_unknown_keys() -> None:
    with pytest.raises(pt.ConfigError, match=r"unknown key\(s\) \['hgih'\]"):
        dimension_from_dict("x", {"type": "float", "low": 0, "hgih": 1})
    with pytest.raises(pt.ConfigError, match="type must be one of"):
        dimension_from_dict("x", {"type": "floaty", "low": 0, "high": 1})


def test_the_baseline_rule_places_undeclared_numeric_dimensions() -> None:
    """"low": the lower bound (a model's knobs, nothing applied); "centre": the middle of the
    range, on its grid, geometric on a log scale. A declared default wins under both, and a
    categorical has no centre: its first choice."""
    space = pt.SearchSpace({
        "f": pt.Float(-2.0, 4.0),
        "g": pt.Float(0.0, 0.5, step=0.1),
        "l": pt.Float(1e-4, 1.0, log=True),
        "i": pt.Int(0, 1000, step=50),
        "j": pt.Int(1, 64, log=True),
        "d": pt.Float(0.0, 1.0, default=0.9),
        "c": pt.Choice(["b", "a"]),
    })
    assert dict(space.baseline()) == dict(space.baseline("low")) == {
        "f": -2.0, "g": 0.0, "l": 1e-4, "i": 0, "j": 1, "d": 0.9, "c": "b"}
    assert dict(space.baseline("centre")) == {
        "f": 1.0, "g": 0.2, "l": pytest.approx(0.01), "i": 500, "j": 8, "d": 0.9, "c": "b"}
    with pytest.raises(pt.ConfigError, match=r"baseline rule must be one of \['low', 'centre'\], got 'middle'"):
        space.baseline("middle")
