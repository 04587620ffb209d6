"""A small model and task for the GPU tests (importable, so built modules pickle). The GPU
tests: the logic checked here without a GPU (fakes, monkeypatched probes), and the real engines,
marked `gpu`, which skip with the missing piece named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from paretotune.evaluators import Task, TimingPolicy

#: Short windows: tests check relations, never times.
FAST = TimingPolicy(
    warmup_iters=1, min_window_iters=3, min_window_ms=1.0, stable_windows=3, max_windows=3
)
LAYERS = {"conv1": "Conv2d", "fc1": "Linear", "fc2": "Linear"}


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def small_net() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet().eval()


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


def small_task() -> Task:
    return Task(
        small_net,
        {"x": images(8)},
        calibration=[{"x": images(16, seed=s)} for s in (1, 2)],
        validation=[({"x": images(32, seed=3)}, None), ({"x": images(32, seed=4)}, None)],
        name="small",
    )


@pytest.fixture(scope="session", name="task")
def task_fixture() -> Task:
    """The small task as a fixture (imported by the test modules: no conftest here, so the
    other test folders' `from conftest import ...` keep finding their own)."""
    return small_task()
