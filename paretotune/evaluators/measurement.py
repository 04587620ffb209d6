"""`Measurement`: what one evaluated configuration returns to the study."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from paretotune.errors import EvaluationError

#: The metric vocabulary an evaluator produces (the controller derives accuracy_drop; `speedup`
#: is the evaluator's paired measurement, and the controller's 1 for the baseline trial).
METRIC_NAMES: tuple[str, ...] = (
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "throughput",
    "accuracy",
    "model_bytes",
    "peak_memory_bytes",
    "build_s",
    "baseline_latency_p50_ms",
    "speedup",
)


@dataclass(frozen=True)
class Measurement:
    """The metrics of one built and measured configuration, plus how they were obtained.

    `metrics` holds finite floats only (a trial never stores a made-up number); `details` is
    JSON-serializable context: stability, sample counts, cache hits, hardware, phase times.
    """

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise EvaluationError(
                    f"metric {name!r} must be a float, got {type(value).__name__} {value!r}"
                )
            if not math.isfinite(value):
                raise EvaluationError(f"metric {name!r} must be finite, got {value!r}")
            self.metrics[name] = float(value)
