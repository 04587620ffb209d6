"""Reading configurations: defaults, unknown keys, unbuildable combinations."""

from __future__ import annotations

import pytest

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.evaluators.config import DEFAULTS, resolve_config

LAYERS = {"conv1": "Conv2d", "fc1": "Linear", "fc2": "Linear"}


def test_missing_keys_take_their_defaults() -> None:
    spec = resolve_config({}, LAYERS)
    assert (spec.engine, spec.bit_width, spec.prune_ratio, spec.batch_size, spec.threads) == (
        "torch",
        32,
        0.0,
        1,
        1,
    )
    assert spec.quant_mode is None and spec.excluded_layers == ()


def test_unknown_key_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="'bitwidth'") as info:
        resolve_config({"bitwidth": 8}, LAYERS)
    for key in DEFAULTS:
        assert key in str(info.value)


def test_user_keys_are_left_alone() -> None:
    assert resolve_config({"x_note": "anything"}, LAYERS).engine == "torch"


@pytest.mark.parametrize(
    "config",
    [
        {"engine": "torch", "bit_width": 4},
        {"engine": "onnxruntime", "bit_width": 16},
        {"engine": "torch", "bit_width": 8, "quant_mode": "static"},
        {"engine": "torch", "bit_width": 8, "precision": {"fc1": "fp32", "fc2": "fp32"}},
        {"engine": "onnxruntime", "bit_width": 8, "precision": {"fc1": "fp16"}},
    ],
)
def test_unbuildable_combinations_are_invalid_before_any_build(
    config: dict, tiny_evaluator
) -> None:
    with pytest.raises(InvalidConfigError):
        tiny_evaluator(config)
    assert tiny_evaluator.builds == 0


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"prune_ratio": 0.95}, "prune_ratio"),
        ({"bit_width": 7}, "bit_width"),
        ({"engine": "tensorflow"}, "engine"),
        ({"batch_size": 0}, "batch_size"),
        ({"threads": 1.5}, "threads"),
        ({"per_channel": "yes", "bit_width": 8}, "per_channel"),
        ({"bit_width": 8, "precision": {"nope": "fp32"}}, "nope"),
        ({"bit_width": 8, "precision": {"fc1": "int3"}}, "fc1"),
    ],
)
def test_bad_values_name_the_field_and_value(config: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        resolve_config(config, LAYERS)


def test_batch_size_and_threads_are_not_part_of_the_build() -> None:
    a = resolve_config({"engine": "onnxruntime", "batch_size": 1, "threads": 1}, LAYERS)
    b = resolve_config({"engine": "onnxruntime", "batch_size": 32, "threads": 2}, LAYERS)
    assert a.build_dict() == b.build_dict()
    assert (
        a.build_dict()
        != resolve_config({"engine": "onnxruntime", "bit_width": 8}, LAYERS).build_dict()
    )


def test_excluded_layers_come_from_fp32_precision() -> None:
    spec = resolve_config(
        {"engine": "onnxruntime", "bit_width": 8, "precision": {"fc2": "fp32", "fc1": "int8"}},
        LAYERS,
    )
    assert spec.excluded_layers == ("fc2",)


def test_create_study_refuses_a_dimension_the_task_evaluator_does_not_know(tmp_path, tiny_task) -> None:
    """A typo in a space key would fail every trial: create_study names it and the known keys."""
    import paretotune as pt

    task = tiny_task
    space = pt.SearchSpace({"engine": pt.Choice(["torch"]), "bitwidth": pt.Choice([8, 32])})
    with pytest.raises(pt.ConfigError, match=r"unknown dimension\(s\) \['bitwidth'\].*'bit_width'"):
        pt.create_study("typo", storage=f"sqlite:///{tmp_path}/s.db", space=space, task=task,
                        objectives={"accuracy": "max"})
    mine = pt.SearchSpace({"engine": pt.Choice(["torch"]), "x_note": pt.Choice(["a", "b"])})
    study = pt.create_study("mine", storage=f"sqlite:///{tmp_path}/s.db", space=mine, task=task,
                            objectives={"accuracy": "max"})
    assert list(study.space.dimensions) == ["engine", "x_note"]
