"""`Measurement`: what one evaluated configuration returns to the study."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from paretotune.errors import EvaluationError
from paretotune.metrics import MEASURED_METRICS

#: the metrics a single-stream evaluation returns (the vocabulary is `paretotune.metrics`;
#: `speedup` is the evaluator's paired measurement, and the study's 1 for the baseline trial)
METRIC_NAMES: tuple[str, ...] = MEASURED_METRICS


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
