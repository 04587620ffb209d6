"""A small real study of the digits CNN, recorded in-process with ask/tell (no child
interpreters, a short timing policy), shared by the export and report tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import paretotune as pt
from paretotune.evaluators import TaskEvaluator, TimingPolicy, load_task

TASK = "examples.digits:task"
FAST = TimingPolicy(warmup_iters=2, min_window_iters=5, min_window_ms=5.0, max_windows=3)
SPACE = pt.SearchSpace(
    {
        "engine": pt.Choice(["torch", "onnxruntime"]),
        "bit_width": pt.Choice([32, 8]),
        "batch_size": pt.Choice([1, 8]),
        "quant_mode": pt.Choice(["dynamic", "static"], when={"engine": "onnxruntime", "bit_width": 8}),
    }
)
OBJECTIVES = {"latency_p50_ms": "min", "throughput": "max", "accuracy": "max"}
#: after the baseline (trial 0): trial 1 ORT int8 static, trial 2 torch int8 at batch 8
CONFIGS: list[dict[str, Any]] = [
    {"engine": "onnxruntime", "bit_width": 8, "quant_mode": "static", "batch_size": 8},
    {"engine": "torch", "bit_width": 8, "batch_size": 8},
]


@dataclass
class Recorded:
    study: pt.Study
    url: str
    cache_dir: Path


def record_study(
    name: str,
    url: str,
    cache_dir: Path,
    configs: Sequence[dict[str, Any]] = CONFIGS,
    *,
    failure_reason: str | None = None,
) -> pt.Study:
    """Baseline plus `configs`, measured for real; then one FAIL and one INVALID trial."""
    study = pt.create_study(
        name, url, space=SPACE, task=TASK, objectives=OBJECTIVES,
        constraints={"accuracy_drop": ("<=", 0.01)}, sampler="random", seed=0,
        warm_start="none",  # the trials are the enqueued configs, in order
    )
    for config in configs:
        study.enqueue(config)
    evaluator = TaskEvaluator(load_task(TASK), cache_dir=cache_dir, timing=FAST)
    for _ in range(1 + len(configs)):
        pending = study.ask()
        measurement = evaluator(pending.config)
        study.tell(pending, measurement.metrics, measurement.details)
    if failure_reason is not None:
        study.enqueue({"engine": "torch", "bit_width": 32, "batch_size": 1})
        study.tell_failure(study.ask(), failure_reason)
        study.enqueue({"engine": "onnxruntime", "bit_width": 32, "batch_size": 1})
        study.tell_invalid(study.ask(), "bit_width=16 is not buildable on engine='onnxruntime' on CPU")
    return study


@pytest.fixture(scope="session")
def digits_study(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    root = tmp_path_factory.mktemp("digits")
    url = f"sqlite:///{root.resolve() / 'study.db'}"
    study = record_study("digits-export", url, root / "cache", failure_reason="killed by SIGKILL (likely out of memory)")
    return Recorded(study, url, root / "cache")
