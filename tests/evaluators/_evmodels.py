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


def tiny_bert() -> torch.nn.Module:
    """A 2-layer, 4-head BERT (hidden 64) with seeded random weights behind MiniLM's mean
    pooling: the conformance suite's small transformer (MiniLM's tokenizer, no download)."""
    from transformers import BertConfig, BertModel

    from examples.minilm import MiniLMEmbedder

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=128, attn_implementation="eager",
    )
    return MiniLMEmbedder(BertModel(config, add_pooling_layer=False)).eval()


class SleepingRunner:
    """A fake engine whose timed call waits `ms` x the factor in `factor_file` (8 bytes, a
    float another process may rewrite: a slowdown that hits every engine of this process
    alike). It sleeps until just before its deadline and spins the rest, so the call lasts
    what it says (a bare sleep overshoots by a fixed amount, which would bias a ratio).
    The accuracy pass runs the wrapped real runner."""

    def __init__(self, inner: object, ms: float, factor_file: str | None = None) -> None:
        self.inner = inner
        self.ms = ms
        self.factor_file = factor_file

    def factor(self) -> float:
        if self.factor_file is None:
            return 1.0
        import os
        import struct

        fd = os.open(self.factor_file, os.O_RDONLY)
        try:
            return float(struct.unpack("d", os.pread(fd, 8, 0))[0])
        finally:
            os.close(fd)

    def prepare(self, inputs: object) -> object:
        import time

        def call() -> None:
            deadline = time.perf_counter() + self.ms * self.factor() / 1e3
            rest = deadline - time.perf_counter() - 3e-4
            if rest > 0:
                time.sleep(rest)
            while time.perf_counter() < deadline:
                pass

        return call

    def run(self, inputs: object) -> object:
        return self.inner.run(inputs)  # type: ignore[attr-defined]


def write_factor(path: str, factor: float) -> None:
    import os
    import struct

    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, struct.pack("d", factor), 0)
    finally:
        os.close(fd)


#: run by `python -c` as the background process: rewrite the factor every `period` seconds,
#: alternating between the given values, until killed
PERTURBER = """
import os, struct, sys, time
path, period, values = sys.argv[1], float(sys.argv[2]), [float(v) for v in sys.argv[3:]]
fd = os.open(path, os.O_WRONLY)
i = 0
while True:
    os.pwrite(fd, struct.pack("d", values[i % len(values)]), 0)
    i += 1
    time.sleep(period)
"""
