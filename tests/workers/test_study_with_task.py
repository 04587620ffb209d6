"""A study over a real pt.Task: an engine that cannot build the model fails its trials with
the exporter's message, and the study goes on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

EVALUATOR_TESTS = str(Path(__file__).resolve().parents[1] / "evaluators")
sys.path.insert(0, EVALUATOR_TESTS)
import paretotune as pt  # noqa: E402

import _evmodels  # noqa: E402


def test_unexportable_model_fails_its_onnx_trials_and_the_study_continues(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARETOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    # trial processes import the model's module by name, as they would a user's package
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([EVALUATOR_TESTS, os.environ.get("PYTHONPATH", "")]))
    task = pt.Task(_evmodels.unexportable, {"x": _evmodels.images(4)},
                   validation=[({"x": _evmodels.images(8)}, None)])
    space = pt.SearchSpace({"engine": pt.Choice(["torch", "onnxruntime"]), "batch_size": pt.Choice([1, 2, 4])})
    study = pt.create_study("unexportable", f"sqlite:///{tmp_path}/u.db", space=space, task=task,
                            objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler="random", seed=0,
                            max_failures=40)
    for b in (1, 2):
        study.enqueue({"engine": "onnxruntime", "batch_size": b})
    study.optimize(task, n_trials=4, timeout_s=300)
    failed = [t for t in study.trials if t.state == pt.TrialState.FAIL]
    assert len(failed) >= 2 and all(t.config["engine"] == "onnxruntime" for t in failed)
    assert all("bessel_j0" in t.reason for t in failed)
    done = study.completed()
    assert len(done) == 4 and all(t.config["engine"] == "torch" for t in done)
