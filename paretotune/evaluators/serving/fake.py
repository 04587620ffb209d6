"""Fake engines with a known service time, to validate the serving harness (M/D/1 and friends).

`FakeEngine` takes `a + b * n` ms for a batch of n. With `busy=True` it computes for that long,
as a compute-bound engine would: it keeps a core busy and, like ONNX Runtime or torch, releases
the GIL while it computes (the spin is a loop of short NumPy kernels). With `busy=False` it
waits on the clock instead: the service time then stays what it says on a shared machine, where
a busy core gets preempted (a 2 ms spin beside other jobs on 2 cores averaged 4 ms). Tests that
compare against a queueing model use that. `NoOpRunner` returns at once: what is left is the
harness's own cost.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from paretotune.errors import ConfigError

_CHUNK = 2048  # float64s per kernel: ~20 us each, so a spin overshoots by about that


class FakeEngine:
    """Service time a_ms + b_ms * batch: spent computing (busy) or waiting (not busy)."""

    def __init__(self, a_ms: float, b_ms: float = 0.0, *, busy: bool = True) -> None:
        if not (a_ms >= 0 and b_ms >= 0 and a_ms + b_ms > 0):
            raise ConfigError(
                f"FakeEngine needs a_ms >= 0 and b_ms >= 0 with a_ms + b_ms > 0, got "
                f"a_ms={a_ms!r}, b_ms={b_ms!r}"
            )
        self.a_ms, self.b_ms, self.busy = float(a_ms), float(b_ms), busy
        self._buffer = np.random.default_rng(0).random(_CHUNK)

    def service_ms(self, batch: int) -> float:
        return self.a_ms + self.b_ms * batch

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        n = next(iter(inputs.values())).shape[0]
        deadline = time.perf_counter_ns() + int(self.service_ms(n) * 1e6)
        if self.busy:
            buffer = self._buffer
            while time.perf_counter_ns() < deadline:
                np.sin(buffer, out=buffer)
        else:
            left = deadline - time.perf_counter_ns()
            if left > 0:
                time.sleep(left / 1e9)
        return np.zeros((n, 1), dtype=np.float32)


class NoOpRunner:
    """Returns one zero row per input row at once."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        n = next(iter(inputs.values())).shape[0]
        return np.zeros((n, 1), dtype=np.float32)
