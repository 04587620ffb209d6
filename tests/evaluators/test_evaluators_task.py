"""Tasks: broken ones are rejected at validate() with the reason; load_task; as_evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretotune.errors import ConfigError, TaskError
from paretotune.evaluators import Task, TaskEvaluator, as_evaluator, availability, load_task

from _evmodels import images, tiny_net


def _task(model, inputs=None, **kwargs) -> Task:
    kwargs.setdefault("validation", [({"x": images(4)}, None)])
    return Task(model, inputs if inputs is not None else {"x": images(4)}, **kwargs)


def test_a_good_task_validates_and_lists_its_layers(tiny_task: Task) -> None:
    tiny_task.validate()
    assert tiny_task.layers == {
        "conv1": "Conv2d",
        "conv2": "Conv2d",
        "fc1": "Linear",
        "fc2": "Linear",
    }
    openvino = ["openvino"] if availability.importable("openvino") else []
    assert tiny_task.available_engines() == ["torch", "onnxruntime", *openvino]


def test_missing_onnx_file(tmp_path) -> None:
    with pytest.raises(TaskError, match="does not exist"):
        _task(tmp_path / "missing.onnx").validate()


def test_onnx_file_failing_the_checker(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["not_defined"], ["y"])], "g", [x], [y])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(TaskError, match="onnx.checker"):
        _task(path).validate()


def test_example_inputs_that_do_not_run() -> None:
    with pytest.raises(TaskError, match="example inputs do not run"):
        _task(tiny_net, {"x": np.zeros((2, 3, 5, 5), np.float32)}).validate()


def test_factory_that_raises_or_returns_something_else() -> None:
    def broken() -> torch.nn.Module:
        raise RuntimeError("weights are missing")

    with pytest.raises(TaskError, match="weights are missing"):
        _task(broken).validate()
    with pytest.raises(TaskError, match="torch.nn.Module"):
        _task(lambda: "not a module").validate()


def test_no_validation_batches() -> None:
    with pytest.raises(TaskError, match="no validation"):
        _task(tiny_net, validation=[]).validate()


def test_load_task_resolves_import_paths_and_names_failures() -> None:
    assert load_task("_evmodels:tiny_net") is tiny_net
    with pytest.raises(TaskError, match="no_such_module"):
        load_task("no_such_module.sub:task")
    with pytest.raises(TaskError, match="has no attribute"):
        load_task("_evmodels:missing")
    with pytest.raises(TaskError, match="package.module:attribute"):
        load_task("no_colon")


def test_as_evaluator(tiny_task: Task, tmp_path) -> None:
    assert isinstance(as_evaluator(tiny_task, cache_dir=tmp_path), TaskEvaluator)

    def fn(config):
        return {"accuracy": 1.0}

    assert as_evaluator(fn) is fn
    with pytest.raises(ConfigError, match="int"):
        as_evaluator(3)


def test_onnx_task_runs_on_onnxruntime_only(tiny_task: Task, tmp_path) -> None:
    from paretotune.evaluators.onnxruntime_engine import export_onnx

    path = tmp_path / "tiny.onnx"
    path.write_bytes(export_onnx(tiny_task.fresh_module(), tiny_task))
    task = _task(path)
    task.validate()
    openvino = ["openvino"] if availability.importable("openvino") else []
    assert task.available_engines() == ["onnxruntime", *openvino]
    assert set(task.layers.values()) == {"Conv", "Gemm"}


def test_padding_mask_cuts_timing_batches_and_is_checked() -> None:
    ids = np.array([[5, 6, 0, 0], [5, 6, 7, 0]])
    mask = (ids > 0).astype(np.int64)
    task = Task(tiny_net, {"ids": ids, "mask": mask}, padding_mask="mask")
    assert task.timing_batch(1)["ids"].tolist() == [[5, 6]]
    assert task.timing_batch(3)["mask"].tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 0]]
    unpadded = Task(tiny_net, {"ids": ids, "mask": mask})
    assert unpadded.timing_batch(1)["ids"].shape == (1, 4)
    assert task.data_id() != unpadded.data_id()
    with pytest.raises(TaskError, match="padding_mask must name an input, got 'attention'"):
        Task(tiny_net, {"ids": ids, "mask": mask}, padding_mask="attention")
    with pytest.raises(TaskError, match="must be a \\(batch, sequence\\) array of 0/1"):
        Task(tiny_net, {"ids": ids, "mask": mask}, padding_mask="ids")


def test_the_digits_example_keeps_the_weights_it_trains(tmp_path, monkeypatch) -> None:
    """The weights a fresh process loads from the machine's cache are the ones training gives,
    and a second process loads them instead of training (what makes trial processes quick)."""
    from examples.digits import model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model._trained_state.cache_clear()
    try:
        trained = model._trained_state()  # no file yet: trains and keeps it
        assert model.weights_path().parent == tmp_path / "paretotune" and model.weights_path().is_file()
        model._trained_state.cache_clear()
        monkeypatch.setattr(model, "train", lambda *a, **k: pytest.fail("trained although the weights were kept"))
        loaded = model._trained_state()
        assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in trained)
        model.weights_path().write_bytes(b"not a checkpoint")  # a damaged file is trained again
        model._trained_state.cache_clear()
        monkeypatch.undo()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        again = model._trained_state()
        assert all(torch.equal(again[k], trained[k]) for k in trained)  # training is deterministic
    finally:
        model._trained_state.cache_clear()
