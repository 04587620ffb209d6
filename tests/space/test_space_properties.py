"""Properties of spaces and configs (hypothesis)."""

from __future__ import annotations

import json
import random

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import paretotune as pt
from paretotune.space.standard import standard_space

LAYERS = {"conv1": "Conv2d", "conv2": "Conv2d", "fc1": "Linear", "fc2": "Linear"}


class _Task:
    layers = LAYERS

    def finetune(self, module: object) -> None:  # pruning is searched only with a recovery hook
        pass

    def available_engines(self) -> list[str]:
        return ["torch", "onnxruntime"]

    def engine_capabilities(self) -> dict:
        """What the engines declare, as the data `SearchSpace.standard` reads."""
        from paretotune.evaluators.engines import space_capabilities

        return space_capabilities(self.available_engines())


def joint_space() -> pt.SearchSpace:
    return pt.SearchSpace(
        {
            "prune_ratio": pt.Float(0.0, 0.6, step=0.1),
            "bit_width": pt.Choice([4, 8, 16, 32]),
            "batch_size": pt.Int(1, 64, log=True),
            "engine": pt.Choice(["onnxruntime", "torch"]),
            "quant_mode": pt.Choice(["dynamic", "static"], when={"engine": "onnxruntime", "bit_width": 8}),
            "precision": pt.PerLayer(["int8", "fp16", "fp32"], layers=LAYERS, granularity="type"),
        },
        forbidden=[{"engine": "torch", "bit_width": 4}, {"engine": "onnxruntime", "bit_width": 16}],
    )


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_every_sampled_config_is_valid_and_never_forbidden(seed: int) -> None:
    space = joint_space()
    config = space.sample(random.Random(seed))
    assert space.violation(config) is None
    # re-validating a sampled config through the strict path gives the same config
    assert space.config(config.to_dict()) == config
    assert ("quant_mode" in config) == (config["engine"] == "onnxruntime" and config["bit_width"] == 8)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_optuna_suggestions_respect_conditions_and_forbidden(seed: int) -> None:
    space = standard_space(_Task())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    try:
        config = space.suggest(trial)
    except pt.InvalidConfigError as exc:
        # the only way out is a forbidden combination, and it says which
        assert "forbidden combination" in str(exc)
        assert space.violation({k: v for k, v in trial.params.items() if "." not in k}) is not None
        return
    assert space.violation(config) is None
    assert space.from_params(trial.params) == config
    assert space.from_params(space.to_params(config)) == config


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_config_json_round_trip_is_exact(seed: int) -> None:
    config = joint_space().sample(seed)
    text = config.to_json()
    again = pt.Config.from_json(text)
    assert again == config and again.to_json() == text and again.hash == config.hash
    assert json.loads(text) == config.to_dict()


def test_config_is_frozen_and_canonical() -> None:
    a = pt.Config({"b": 1, "a": {"y": 2, "x": 1}})
    b = pt.Config({"a": {"x": 1, "y": 2}, "b": 1})
    assert a == b and hash(a) == hash(b) and a.hash == b.hash and len(a.hash) == 16
    assert a.to_json() == '{"a":{"x":1,"y":2},"b":1}'
    with pytest.raises(TypeError):
        a["b"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        a["a"]["x"] = 5
    assert pt.Config({"p": 0.1 + 0.2}) != pt.Config({"p": 0.3})  # raw floats are kept as given
    assert joint_space().config({"prune_ratio": 0.1 + 0.2, "bit_width": 32, "batch_size": 1, "engine": "torch",
                                 "precision": {k: "fp32" for k in LAYERS}})["prune_ratio"] == 0.3


def test_space_round_trips_through_json_and_yaml() -> None:
    space = joint_space()
    assert pt.SearchSpace.from_json(space.to_json()) == space
    assert pt.SearchSpace.from_yaml(space.to_yaml()) == space
    assert pt.SearchSpace.from_dict(space.to_dict()).to_dict() == space.to_dict()


def test_grid_enumerates_exactly_the_valid_configs() -> None:
    space = pt.SearchSpace(
        {
            "engine": pt.Choice(["torch", "onnxruntime"]),
            "bit_width": pt.Choice([4, 8, 32]),
            "quant_mode": pt.Choice(["dynamic", "static"], when={"engine": "onnxruntime", "bit_width": 8}),
        },
        forbidden=[{"engine": "torch", "bit_width": 4}],
    )
    grid = list(space.grid())
    # torch: 8, 32 (4 forbidden); onnxruntime: 4, 32, and 8 x {dynamic, static}
    assert len(grid) == 6 and len(set(grid)) == 6
    assert all(space.violation(c) is None for c in grid)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"dimensions": {"x": pt.Choice([1]), "y": pt.Choice([1], when={"z": 1})}}, "unknown dimension 'z'"),
        ({"dimensions": {"x": pt.Choice([1], when={"y": 1}), "y": pt.Choice([1], when={"x": 1})}}, "cycle"),
        ({"dimensions": {"x": pt.Choice([1, 2]), "y": pt.Choice([1], when={"x": 3})}}, "must be one of [1, 2], got 3"),
        ({"dimensions": {"x": pt.Choice([1])}, "forbidden": [{"q": 1}]}, "forbidden[0] names unknown dimension 'q'"),
        ({"dimensions": {"x": pt.Choice([1])}, "forbidden": [{"x": 2}]}, "must be one of [1], got 2"),
        ({"dimensions": {"bad-name": pt.Choice([1])}}, "identifiers"),
    ],
)
def test_bad_spaces_name_the_problem(kwargs, fragment) -> None:
    with pytest.raises(pt.ConfigError) as err:
        pt.SearchSpace(kwargs["dimensions"], forbidden=kwargs.get("forbidden", ()))
    assert fragment in str(err.value)


def test_space_dict_rejects_unknown_keys() -> None:
    with pytest.raises(pt.ConfigError, match=r"unknown key\(s\) \['dimension'\]"):
        pt.SearchSpace.from_dict({"dimension": {}})


def test_config_rejects_unknown_and_inactive_values() -> None:
    space = joint_space()
    base = space.baseline().to_dict()
    with pytest.raises(pt.ConfigError, match=r"unknown dimension\(s\) \['colour'\]"):
        space.config({**base, "colour": "red"})
    with pytest.raises(pt.ConfigError, match="`quant_mode` is set but inactive"):
        space.config({**base, "quant_mode": "static"})
    with pytest.raises(pt.InvalidConfigError, match="engine='torch', bit_width=4"):
        space.config({**base, "engine": "torch", "bit_width": 4})


def test_standard_space_binds_layers_and_forbids_unbuildable() -> None:
    space = pt.SearchSpace.standard(_Task())
    assert space.is_bound
    assert {"engine", "bit_width", "batch_size", "prune_ratio", "precision", "quant_mode"} <= set(space.dimensions)
    assert all(space.violation(c) is None for c in space.grid())
    assert not any(c["engine"] == "torch" and c["bit_width"] == 4 for c in space.grid())
    base = space.baseline()
    assert base["bit_width"] == 32 and base["prune_ratio"] == 0.0 and base["engine"] == "torch"


class _NoFinetune(_Task):
    finetune = None  # type: ignore[assignment]


def test_standard_space_prunes_only_tasks_that_can_recover() -> None:
    assert "prune_ratio" not in pt.SearchSpace.standard(_NoFinetune()).dimensions
    assert pt.SearchSpace.standard(_NoFinetune(), max_prune_ratio=0.3).dimensions["prune_ratio"].high == 0.3
    assert "prune_ratio" not in pt.SearchSpace.standard(_Task(), max_prune_ratio=0).dimensions
    with pytest.raises(pt.ConfigError, match=r"max_prune_ratio must be in \[0, 1\), got 1.5"):
        pt.SearchSpace.standard(_Task(), max_prune_ratio=1.5)


def test_a_trial_still_being_suggested_reads_as_incomplete_not_a_crash(tmp_path) -> None:
    space = standard_space(_Task())
    params = space.to_params(space.config({"engine": "onnxruntime", "bit_width": 8, "batch_size": 1},
                                          fill_defaults=True))
    partial = {k: v for k, v in params.items() if k != f"precision.{next(iter(LAYERS))}"}
    with pytest.raises(pt.ConfigError, match=r"params: precision is incomplete, missing \['precision\."):
        space.from_params(partial)
    # a study lists such a trial (another worker is mid-ask) as RUNNING without a config
    study = pt.create_study("mid", f"sqlite:///{tmp_path}/mid.db", space=space,
                            objectives=["latency_p50_ms", "accuracy"], warm_start="none")
    from paretotune.testing import FakeEvaluator

    pending = study.ask()  # the baseline
    study.tell(pending, FakeEvaluator()(pending.config))
    ot = study.optuna_study.ask()
    for name in ("engine", "bit_width", "batch_size"):
        ot.suggest_categorical(name, list(space.dimensions[name].values() or ()))
    for name in partial:
        if name.startswith("precision."):
            ot.suggest_categorical(name, ["int8", "fp32"])
    mid = [t for t in study.trials if t.state == pt.TrialState.RUNNING]
    assert len(mid) == 1 and mid[0].config is None
