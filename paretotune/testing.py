"""Fake evaluators: test the controller, the workers and the store without building engines.

`FakeEvaluator` returns deterministic metrics with a real trade-off (bigger batches and lower
bit widths are faster, and cost accuracy), computed from the config alone. It also misbehaves
on request, through a ``mode`` key in the config: ``raise``, ``exit`` (``os._exit``), ``hang``,
``nan`` or ``kill`` (SIGKILL to itself). `null_evaluator` returns constant metrics instantly,
for measuring controller overhead.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Mapping
from typing import Any


def null_evaluator(config: Mapping[str, Any]) -> dict[str, float]:
    """Constant metrics, no work: what's left of a trial's time is the controller's."""
    return {"latency_p50_ms": 1.0, "throughput": 1000.0, "accuracy": 0.9}


class FakeEvaluator:
    """Deterministic metrics from the config, with opt-in failure modes (see module doc)."""

    def __init__(self, *, sleep_s: float = 0.0, hang_s: float = 3600.0) -> None:
        self.sleep_s = sleep_s
        self.hang_s = hang_s

    def __call__(self, config: Mapping[str, Any]) -> dict[str, float]:
        mode = config.get("mode", "ok")
        if mode == "raise":
            raise RuntimeError("fake evaluator asked to raise")
        if mode == "exit":
            os._exit(7)
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "hang":
            time.sleep(self.hang_s)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        prune = float(config.get("prune_ratio", 0.0))
        bits = int(config.get("bit_width", 32))
        batch = int(config.get("batch_size", 1))
        x = float(config.get("x", 0.0))
        engine_factor = {"torch": 1.0, "onnxruntime": 0.7}.get(str(config.get("engine", "torch")), 1.0)
        per_sample_ms = engine_factor * (1.0 - 0.6 * prune) * (0.25 + 0.75 * bits / 32) * (1.0 + x)
        latency = 0.5 + per_sample_ms * batch ** 0.85
        # like the real evaluator: the unmodified model's latency at this batch size
        baseline_latency = 0.5 + batch ** 0.85
        accuracy = 0.98 - 0.3 * prune**2 - {32: 0.0, 16: 0.001, 8: 0.006, 4: 0.03}.get(bits, 0.0) - 0.05 * x**2
        metrics = {
            "latency_p50_ms": latency,
            "latency_p90_ms": latency * 1.1,
            "throughput": 1000.0 * batch / latency,
            "accuracy": accuracy,
            "model_bytes": 1e6 * (1 - prune) * bits / 32,
            "baseline_latency_p50_ms": baseline_latency,
        }
        if mode == "nan":
            metrics["accuracy"] = math.nan
        return metrics


#: a ready instance, for specs: ``task: paretotune.testing:fake_evaluator``
fake_evaluator = FakeEvaluator()
#: the same, taking 0.2 s a trial: long enough for a second worker to join mid-study
slow_fake_evaluator = FakeEvaluator(sleep_s=0.2)
