"""Evaluators: turn a configuration into a built engine and a `Measurement`.

Importing this package does not import torch or onnxruntime; engines load them when used.
"""

from __future__ import annotations

from paretotune.evaluators.cache import ArtifactCache
from paretotune.evaluators.evaluator import TaskEvaluator
from paretotune.evaluators.hardware import hardware_fingerprint
from paretotune.evaluators.measurement import METRIC_NAMES, Measurement
from paretotune.evaluators.task import Task, as_evaluator, load_task, resolve_task
from paretotune.evaluators.timing import TimingPolicy

__all__ = [
    "METRIC_NAMES",
    "ArtifactCache",
    "Measurement",
    "Task",
    "TaskEvaluator",
    "TimingPolicy",
    "as_evaluator",
    "hardware_fingerprint",
    "load_task",
    "resolve_task",
]
