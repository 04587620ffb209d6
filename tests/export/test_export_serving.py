"""Export of a server-scenario trial: the Triton repository serves the batcher that was
measured (max_batch_size, preferred sizes, queue delay, instance count), parsed strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _triton_schema import parse_model_config

import paretotune as pt
from paretotune.evaluators import TaskEvaluator, load_task
from paretotune.evaluators.serving import BatcherConfig
from paretotune.export import triton_config

TASK = "examples.digits:task"


IO = {"inputs": [{"name": "image", "dtype": "float32", "shape": [-1, 1, 8, 8]}],
      "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}]}


def test_the_measured_batcher_is_written_and_parses_strictly() -> None:
    batcher = BatcherConfig(max_batch_size=16, preferred_batch_sizes=(4, 16), max_queue_delay_us=2000, instances=2)
    triton = parse_model_config(triton_config("m", "onnxruntime", "model.onnx", IO, 16, 1, batcher))
    assert triton.max_batch_size == 16
    assert list(triton.dynamic_batching.preferred_batch_size) == [4, 16]
    assert triton.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [g.count for g in triton.instance_group] == [2]


@pytest.mark.slow
def test_a_server_trial_exports_its_batcher_and_scenario_result(tmp_path: Path) -> None:
    space = pt.SearchSpace({
        "engine": pt.Choice(["torch", "onnxruntime"]),
        "max_batch_size": pt.Choice([1, 8]),
        "max_queue_delay_us": pt.Choice([0, 1000], when={"max_batch_size": [8]}),
        "instances": pt.Choice([1, 2]),
    })
    # 6 s: after the probe, a Server run at half the probe's rate needs 500 queries; at the
    # 432 samples/s a loaded CI machine probed for torch at batch 1, 3 s left no room for one
    scenario = pt.Server(p99_ms=50, budget_s=6)
    study = pt.create_study("srv-export", f"sqlite:///{tmp_path}/s.db", space=space, task=TASK,
                            scenario=scenario, objectives={"server_qps": "max", "accuracy": "max"},
                            warm_start="none")
    chosen = {"engine": "onnxruntime", "max_batch_size": 8, "max_queue_delay_us": 1000, "instances": 2}
    study.enqueue(chosen)
    evaluator = TaskEvaluator(load_task(TASK), cache_dir=tmp_path / "cache", scenario=scenario)
    measured = {}
    for _ in range(2):
        pending = study.ask()
        m = evaluator(pending.config)
        study.tell(pending, m.metrics, m.details)
        measured[pending.number] = m
    trial = next(t for t in study.completed() if t.config == chosen)
    bundle = pt.export(study, trial, tmp_path / "bundle", cache_dir=tmp_path / "cache")
    triton = parse_model_config((bundle.model_repository / bundle.model_name / "config.pbtxt").read_text())
    assert triton.max_batch_size == 8
    assert list(triton.dynamic_batching.preferred_batch_size) == [8]
    assert triton.dynamic_batching.max_queue_delay_microseconds == 1000
    assert [g.count for g in triton.instance_group] == [2]
    measurements = json.loads((bundle.path / "measurements.json").read_text())
    serving = measurements["trial"]["details"]["serving"]
    # the bundle carries the trial's own scenario result, whatever the machine sustained (a
    # stalling VM can find no valid QPS at 50 ms; the record then says so, with server_qps 0)
    assert serving == json.loads(json.dumps(measured[trial.number].details["serving"]))
    assert serving["metrics"]["server_qps"] == trial.metrics["server_qps"]
    assert serving["scenario"]["p99_ms"] == 50
    assert serving["batcher"]["max_batch_size"] == 8
    assert serving["batcher"]["instances"] == 2
