"""One suite, every registered engine: what the `Engine` contract promises, checked on a small
CNN and a small transformer (the way Optuna runs one storage suite against every backend).

An engine that cannot run here skips with its availability reason, a bit width it cannot run
here with that reason. Per engine and model: fidelity to the torch fp32 model at each bit
width within the engine's declared `min_fidelity`; a second build is a cache hit; export then
`load_exported` reproduces the outputs; every declared option value builds; an undeclared
option, or a value it does not declare, is refused; per-layer fp32 leaves that layer
unquantized.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.evaluators import Task, TaskEvaluator, engines
from paretotune.evaluators.engines.base import looks_like_transformer
from paretotune.evaluators.task import mean_cosine, top1_agreement

from _evmodels import FAST, tiny_bert

pytestmark = pytest.mark.slow

ENGINES = engines.names()
MODELS = ("cnn", "transformer")
#: a Linear layer of each model, for per-layer fp32
LAYER = {"cnn": "fc1", "transformer": "bert.encoder.layer.0.attention.self.query"}


def _transformer_task() -> Task:
    """MiniLM's task (its sentences, batches, dynamic axes, cosine fidelity) on a tiny BERT."""
    from examples.minilm import task as minilm

    return Task(
        tiny_bert, minilm.example_inputs, calibration=minilm.calibration[:1],
        validation=minilm.validation[1:3], dynamic_axes=minilm.dynamic_axes,
        output_names=minilm.output_names, fidelity=minilm.fidelity,
        padding_mask=minilm.padding_mask, name="tiny-bert",
    )


@pytest.fixture(scope="module")
def tasks(digits_task: Task) -> dict[str, Task]:
    """The digits CNN (trained: its top-1 agreement is not a coin toss between near-equal
    logits, as a random CNN's is) and a random tiny BERT (cosine of its embeddings)."""
    return {"cnn": digits_task, "transformer": _transformer_task()}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


@pytest.fixture(scope="module")
def evaluators(tasks: dict[str, Task], cache_dir: Path) -> dict[str, TaskEvaluator]:
    return {
        name: TaskEvaluator(task, cache_dir=cache_dir / name, timing=FAST, memory_slots=32)
        for name, task in tasks.items()
    }


def _engine(name: str, task: Task) -> engines.Engine:
    reason = task.unavailable_engines().get(name)
    if reason is not None:
        pytest.skip(f"engine {name!r} cannot run here: {reason}")
    return engines.get(name)


def _bit_width(engine: engines.Engine, bit_width: int) -> None:
    if bit_width not in engine.capabilities.bit_widths:
        pytest.skip(f"engine {engine.name!r} does not declare bit_width={bit_width}")
    reason = engine.bit_width_problem(bit_width)
    if reason is not None:
        pytest.skip(reason)


def _reference(task: Task) -> np.ndarray:
    from paretotune.evaluators.torch_engine import TorchRunner

    runner = TorchRunner(task.reference_module(), task.input_names)
    return np.concatenate([runner.run(inputs) for inputs, _ in task.validation])


def _outputs(evaluator: TaskEvaluator, config: dict[str, Any]) -> np.ndarray:
    built = evaluator.build_artifact(config)
    runner = evaluator._runner(evaluator._built[built.cache_key], built.spec.threads, built.spec)
    return np.concatenate([runner.run(inputs) for inputs, _ in evaluator.task.validation])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("bit_width", [32, 16, 8, 4])
@pytest.mark.parametrize("name", ENGINES)
def test_outputs_agree_with_torch_within_the_declared_tolerance(
    name: str, bit_width: int, model: str, tasks: dict[str, Task], evaluators: dict[str, TaskEvaluator]
) -> None:
    engine = _engine(name, tasks[model])
    _bit_width(engine, bit_width)
    outputs, reference = _outputs(evaluators[model], {"engine": name, "bit_width": bit_width}), _reference(tasks[model])
    fidelity = mean_cosine if model == "transformer" else top1_agreement
    assert fidelity(outputs, reference) >= engine.capabilities.min_fidelity[bit_width]
    if bit_width == 32:  # fp32 is the torch model's arithmetic, to rounding
        np.testing.assert_allclose(outputs, reference, atol=2e-4)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", ENGINES)
def test_a_second_build_is_a_cache_hit(
    name: str, model: str, tasks: dict[str, Task], cache_dir: Path
) -> None:
    _engine(name, tasks[model])
    config = {"engine": name, "bit_width": 8 if 8 in engines.get(name).capabilities.bit_widths else 32}
    first = TaskEvaluator(tasks[model], cache_dir=cache_dir / "hits", timing=FAST)
    built = first.build_artifact(config)
    second = TaskEvaluator(tasks[model], cache_dir=cache_dir / "hits", timing=FAST)
    again = second.build_artifact(config)
    assert (again.source, second.builds) == ("disk", 0)
    assert (again.data, again.cache_key, again.accuracy) == (built.data, built.cache_key, built.accuracy)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", ENGINES)
def test_export_then_load_exported_reproduces_the_outputs(
    name: str, model: str, tasks: dict[str, Task], evaluators: dict[str, TaskEvaluator], tmp_path: Path
) -> None:
    engine = _engine(name, tasks[model])
    if not engine.exportable():
        pytest.skip(f"engine {name!r} declares no export")
    task, evaluator = tasks[model], evaluators[model]
    config = {"engine": name, "bit_width": 8 if 8 in engine.capabilities.bit_widths else 32}
    built = evaluator.build_artifact(config)
    exported = engine.export(built.data, built.spec, task)
    for file_name, data in exported.files.items():
        (tmp_path / file_name).write_bytes(data)
    layout = engine.triton_layout(built.spec.threads, built.spec)
    assert layout.backend and layout.kind in ("KIND_CPU", "KIND_GPU")
    spec = built.spec
    bundle = {
        "artifact": exported.artifact,
        "io": exported.io,
        "resolved": {**spec.build_dict(), **dict(spec.options + spec.runtime_options), "threads": 1},
    }
    predict = engine.load_exported(tmp_path, bundle)
    names = [s["name"] for s in exported.io["inputs"]]
    dtypes = {s["name"]: s["dtype"] for s in exported.io["inputs"]}
    expected = _outputs(evaluator, config)
    got = np.concatenate([
        np.asarray(predict({n: np.ascontiguousarray(inputs[n].astype(dtypes[n])) for n in names})[0])
        for inputs, _ in task.validation
    ])
    # the same arithmetic, but a re-traced or recompiled int8 kernel may round differently
    fidelity = mean_cosine if model == "transformer" else top1_agreement
    assert fidelity(got.astype(np.float32), expected) >= 0.99
    np.testing.assert_allclose(got.astype(np.float32), expected, atol=0.01 * float(np.abs(expected).max()))


def _option_cases() -> list[tuple[str, str, Any]]:
    return [
        (engine.name, option.name, value)
        for engine in engines.registered()
        for option in engine.capabilities.options
        for value in option.allowed
        if value != option.default
    ]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("name", "option", "value"), _option_cases())
def test_every_declared_option_value_builds(
    name: str, option: str, value: Any, model: str, tasks: dict[str, Task],
    evaluators: dict[str, TaskEvaluator],
) -> None:
    task = tasks[model]
    engine = _engine(name, task)
    declared = engine.capabilities.option(option)
    assert declared is not None
    if declared.transformer and not looks_like_transformer(task.layers):
        pytest.skip(f"option {option!r} applies to transformers only")
    bit_width = next(b for b in (8, 32, 16, 4) if b in declared.bit_widths and b in engine.capabilities.bit_widths)
    _bit_width(engine, bit_width)
    config: dict[str, Any] = {"engine": name, "bit_width": bit_width, option: value, "threads": 2}
    config.update({k: v[0] for k, v in declared.when.items()})
    spec = evaluators[model]._resolve(config)
    assert spec.option(option) == value and option not in spec.ignored
    measurement = evaluators[model](config)
    assert np.isfinite(measurement.metrics["latency_p50_ms"])
    assert measurement.details["build"] == spec.build_dict()


@pytest.mark.parametrize("name", ENGINES)
def test_an_undeclared_option_or_value_is_refused(name: str, tasks: dict[str, Task]) -> None:
    engine = _engine(name, tasks["cnn"])
    with pytest.raises(ConfigError, match="no_such_option"):
        engines.resolve_options(name, {"no_such_option": 1})
    with pytest.raises(ConfigError, match="no_such_option"):
        TaskEvaluator(tasks["cnn"])._resolve({"engine": name, "no_such_option": 1})
    for option in engine.capabilities.options:
        with pytest.raises(ConfigError, match=option.name):
            engines.resolve_options(name, {option.name: "not-a-declared-value"})
        here = [b for b in option.bit_widths if b in engine.capabilities.bit_widths and engine.bit_width_problem(b) is None]
        if not here:
            continue
        bit_width = here[0]
        with pytest.raises((ConfigError, InvalidConfigError), match=option.name):
            TaskEvaluator(tasks["cnn"])._resolve(
                {"engine": name, "bit_width": bit_width, option.name: "not-a-declared-value"}
            )


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", ENGINES)
def test_per_layer_fp32_leaves_the_named_layer_unquantized(
    name: str, model: str, tasks: dict[str, Task], evaluators: dict[str, TaskEvaluator]
) -> None:
    task = tasks[model]
    engine = _engine(name, task)
    if "fp32" not in engine.capabilities.layer_precisions.get(8, ()):
        pytest.skip(f"engine {name!r} declares no per-layer fp32 at bit_width=8")
    layer = LAYER[model]
    other = next(n for n, kind in task.layers.items() if kind == "Linear" and n != layer)
    built = evaluators[model].build_artifact({"engine": name, "bit_width": 8, "precision": {layer: "fp32"}})
    assert engine.full_precision_layers(built.data, built.spec, task, [layer, other]) == [layer]
    plain = evaluators[model].build_artifact({"engine": name, "bit_width": 8})
    assert engine.full_precision_layers(plain.data, plain.spec, task, [layer, other]) == []


def test_an_unknown_engine_is_refused_with_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"engine must be one of \['torch', 'onnxruntime'"):
        engines.get("tensorflow")
    with pytest.raises(ConfigError, match="already registered"):
        engines.register(engines.get("torch"))
