"""Evaluators for the Ray tests; trial processes import this module (tests/ray is on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from paretotune.testing import FakeEvaluator

_fake = FakeEvaluator()


def gpu_probe(config: Any) -> SimpleNamespace:
    """Fake metrics, plus what the trial process saw of its GPUs."""
    time.sleep(0.2)
    return SimpleNamespace(
        metrics=_fake(config),
        details={
            "seen_cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "seen_cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
        },
    )


@dataclass(frozen=True)
class RayCluster:
    address: str  # GCS address, for ray.init / --address
    dashboard_url: str  # for `ray job submit --address`
    env: dict[str, str]
    num_cpus: int = 2
    num_gpus: int = 2


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best
