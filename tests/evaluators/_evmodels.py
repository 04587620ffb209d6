"""Small models for the evaluator tests (importable, so built modules pickle)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from paretotune.evaluators import TimingPolicy

#: Short windows: tests check relations, never times.
FAST = TimingPolicy(
    warmup_iters=1, min_window_iters=3, min_window_ms=1.0, stable_windows=3, max_windows=3
)


class TinyNet(nn.Module):
    """A CNN with Conv and Linear layers whose K dimensions suit int4 blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


class Unexportable(nn.Module):
    """Runs in eager mode, but no ONNX exporter knows `special_bessel_j0`."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(self.fc(x.flatten(1)))


def unexportable() -> Unexportable:
    torch.manual_seed(0)
    return Unexportable().eval()


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)
