"""Torch artifacts in the cache are data, not code (issue 19 item 2): a state_dict read with
`weights_only=True`, restored on the task's model; planted and tampered entries are rebuilt."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from paretotune.errors import EvaluationError
from paretotune.evaluators import Task, TaskEvaluator
from paretotune.evaluators.sources import engine_module, load_torch_module
from paretotune.evaluators.torch_engine import ARTIFACT_FORMAT, restore, serialize

from _evmodels import FAST, tiny_net


class _Planted:
    """Unpickled, it creates `marker` (`open(marker, "w")`): code a planted cache file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _replace_data(cache: Path, key: str, data: bytes, *, fix_hash: bool) -> None:
    (cache / f"{key}.bin").write_bytes(data)
    if fix_hash:  # what a local user who can write the cache directory could do
        meta = json.loads((cache / f"{key}.json").read_text())
        meta["sha256"] = hashlib.sha256(data).hexdigest()
        (cache / f"{key}.json").write_text(json.dumps(meta))


def _evaluator(task: Task, cache: Path) -> TaskEvaluator:
    return TaskEvaluator(task, cache_dir=cache, timing=FAST, exclusive_timing=False)


def _outputs(evaluator: TaskEvaluator, config: dict[str, Any]) -> tuple[Any, str, np.ndarray]:
    """(the built entry, where it came from, its outputs on the first validation batch)."""
    artifact = evaluator.build_artifact(config)
    built = evaluator._built[artifact.cache_key]
    outputs = evaluator._runner(built, 1).run(evaluator.task.validation[0][0])
    return built, artifact.source, outputs


def test_the_torch_artifact_is_a_weights_only_state_dict(tiny_task: Task, tmp_path: Path) -> None:
    built = _evaluator(tiny_task, tmp_path / "cache").build_artifact(
        {"engine": "torch", "bit_width": 8}
    )
    payload = torch.load(io.BytesIO(built.data), weights_only=True)
    assert payload["format"] == ARTIFACT_FORMAT
    assert set(payload["state"]) == set(tiny_net().state_dict())
    assert payload["attrs"]["fc1"]["in_features"] == 256
    assert b"TinyNet" not in built.data and b"_evmodels" not in built.data  # no class to import


@pytest.mark.parametrize(
    "config",
    [
        {"engine": "torch"},
        {"engine": "torch", "bit_width": 8, "per_channel": True},
        {"engine": "torch", "bit_width": 8, "per_channel": False},
        {"engine": "torch", "bit_width": 8, "precision": {"fc1": "fp32"}},
        {"engine": "torch", "prune_ratio": 0.3, "bit_width": 8},
        {"engine": "torch", "sparsity": 0.5},
    ],
    ids=["fp32", "int8-channel", "int8-tensor", "int8-exclusion", "pruned-int8", "sparse"],
)
def test_a_cache_hit_reproduces_the_build_exactly(
    digits_task: Task, tmp_path: Path, config: dict[str, Any]
) -> None:
    built, source, expected = _outputs(_evaluator(digits_task, tmp_path / "cache"), config)
    other = _evaluator(digits_task, tmp_path / "cache")  # another process: memory is empty
    hit, hit_source, got = _outputs(other, config)
    assert (source, hit_source, other.builds) == ("built", "disk", 0)
    np.testing.assert_array_equal(got, expected)
    assert (hit.accuracy, hit.model_bytes) == (built.accuracy, built.model_bytes)


def test_pruned_digits_restores_its_smaller_layers(digits_task: Task, tmp_path: Path) -> None:
    evaluator = _evaluator(digits_task, tmp_path / "cache")
    built = evaluator.build_artifact({"engine": "torch", "prune_ratio": 0.5})
    module = load_torch_module(digits_task, built.spec, built.data)
    assert module.conv1.out_channels == 16 and module.conv1.weight.shape[0] == 16
    assert module.fc2.in_features == 128 and module.fc2.weight.shape == (10, 128)
    assert digits_task.reference_module().conv1.out_channels == 32  # the reference is untouched


def test_a_planted_pickle_is_not_run_on_a_cache_hit(
    tiny_task: Task, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "planted-code-ran"
    config = {"engine": "torch", "bit_width": 8}
    first = _evaluator(tiny_task, cache)
    key = first.build_artifact(config).cache_key
    expected = first(config).metrics["accuracy"]
    buffer = io.BytesIO()
    torch.save(_Planted(marker), buffer)
    _replace_data(cache, key, buffer.getvalue(), fix_hash=True)

    second = _evaluator(tiny_task, cache)
    with caplog.at_level(logging.WARNING, logger="paretotune.evaluators"):
        measured = second(config)
    assert not marker.exists()
    assert second.builds == 1 and measured.details["cache_hit"] is False  # rebuilt
    assert measured.metrics["accuracy"] == expected
    assert any(key in r.getMessage() and "building it again" in r.getMessage() for r in caplog.records)
    assert _evaluator(tiny_task, cache).build_artifact(config).source == "disk"  # entry healed


def test_a_tampered_entry_is_a_miss_and_is_rebuilt(
    tiny_task: Task, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    first = _evaluator(tiny_task, cache)
    sparse = first.build_artifact({"engine": "torch", "sparsity": 0.5})
    int8 = first.build_artifact({"engine": "torch", "bit_width": 8})
    _replace_data(cache, int8.cache_key, sparse.data, fix_hash=False)  # a valid artifact, swapped

    second = _evaluator(tiny_task, cache)
    with caplog.at_level(logging.WARNING, logger="paretotune.evaluators"):
        again = second.build_artifact({"engine": "torch", "bit_width": 8})
    assert again.source == "built" and second.builds == 1
    assert again.data == int8.data
    assert any(int8.cache_key in r.getMessage() and "sha256" in r.getMessage() for r in caplog.records)


def test_restore_refuses_what_is_not_an_artifact_of_this_model(tiny_task: Task) -> None:
    with pytest.raises(EvaluationError, match="not a state_dict artifact"):
        restore(b"not torch data", tiny_net())
    buffer = io.BytesIO()
    torch.save({"format": ARTIFACT_FORMAT, "state": {}, "buffers": {}, "attrs": {"": {}}}, buffer)
    with pytest.raises(EvaluationError, match="does not fit the task's model"):
        restore(buffer.getvalue(), tiny_net())
    data = serialize(tiny_net())
    payload = torch.load(io.BytesIO(data), weights_only=True)
    payload["attrs"]["fc1"]["_parameters"] = 3  # would replace the parameter table
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with pytest.raises(EvaluationError, match="sets attribute '_parameters' of module 'fc1'"):
        restore(buffer.getvalue(), tiny_net())


def test_a_shared_parameter_stays_shared_when_resized() -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 4, bias=False)
            self.b = torch.nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight

    small = Tied()
    small.a.weight = small.b.weight = torch.nn.Parameter(torch.ones(2, 4))
    small.a.out_features = small.b.out_features = 2
    restored = restore(serialize(small), Tied())
    assert restored.a.weight is restored.b.weight and restored.a.weight.shape == (2, 4)
    assert restored.a.out_features == 2


def test_engine_module_is_deterministic(digits_task: Task, tmp_path: Path) -> None:
    built = _evaluator(digits_task, tmp_path / "c").build_artifact(
        {"engine": "torch", "bit_width": 8, "per_channel": False}
    )
    x = torch.from_numpy(digits_task.validation[0][0]["image"])
    outs = [
        engine_module(digits_task, built.spec, restore(built.data, digits_task.fresh_module()))(x)
        for _ in range(2)
    ]
    assert torch.equal(outs[0], outs[1])


def test_a_torch_cuda_artifact_restores_to_the_engines_module(
    digits_task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cast torch_cuda builds, checked on the CPU (the device check stubbed; GPU CI runs it)
    from paretotune.evaluators import pruning, torch_cuda_engine
    from paretotune.evaluators.config import resolve_config
    from paretotune.evaluators.torch_engine import to_tensors

    monkeypatch.setattr(torch_cuda_engine, "check_device", lambda dtype: None)
    spec = resolve_config({"engine": "torch_cuda", "bit_width": 16, "half": "fp16"}, digits_task.layers)
    pruned = digits_task.fresh_module()
    args = to_tensors(digits_task.example_inputs, digits_task.input_names)
    pruning.prune_structured(pruned, args, 0.3)
    data = serialize(pruned)
    expected = torch_cuda_engine.build_torch_cuda(pruned, 16, "fp16").state_dict()
    got = load_torch_module(digits_task, spec, data).state_dict()
    assert list(got) == list(expected)
    assert all(got[k].dtype == torch.float16 and torch.equal(got[k], expected[k]) for k in got)
