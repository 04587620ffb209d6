"""Fake evaluators: test the controller, the workers and the store without building engines.

`FakeEvaluator` returns deterministic metrics with a real trade-off (bigger batches and lower
bit widths are faster, and cost accuracy), computed from the config alone. It also misbehaves
on request, through a ``mode`` key in the config: ``raise``, ``exit`` (``os._exit``), ``hang``,
``nan`` or ``kill`` (SIGKILL to itself). `null_evaluator` returns constant metrics instantly,
for measuring controller overhead. `ReplayEvaluator` serves a stored table of real measurements
(the tabular benchmark of `benchmarks/sampler_efficiency.py`).
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
#: a second a trial: a fault injected "mid-trial" lands inside one
sluggish_fake_evaluator = FakeEvaluator(sleep_s=1.0)


class ReplayEvaluator:
    """Serves a stored table of measured configs: config -> the metrics recorded for it.

    The table is a CSV with a ``config`` column (canonical JSON, `Config.to_json()`), a
    ``state`` column (COMPLETE, INVALID or FAIL), a ``reason`` and one column per metric
    (`benchmarks/sampler_efficiency.py build-table` writes one). A COMPLETE row replays as a
    `Measurement`; an INVALID row raises `InvalidConfigError` and a FAIL row
    `EvaluationError`, each with the recorded reason, as the real evaluator did; a config that
    is not in the table raises `ConfigError`. Sampler comparisons then take seconds and are
    deterministic.
    """

    #: columns copied into `Measurement.details` instead of the metrics
    DETAIL_COLUMNS = ("stable", "spread", "windows", "load1")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import csv

        from paretotune.errors import ConfigError

        self.path = os.fspath(path)
        self._rows: dict[str, dict[str, Any]] = {}
        with open(self.path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(line for line in fh if not line.startswith("#"))
            missing = {"config", "state"} - set(reader.fieldnames or ())
            if missing:
                raise ConfigError(
                    f"replay table {self.path}: missing columns {sorted(missing)}; "
                    f"it has {reader.fieldnames}"
                )
            for line, row in enumerate(reader, start=2):
                state = row["state"]
                if state not in ("COMPLETE", "INVALID", "FAIL"):
                    raise ConfigError(
                        f"replay table {self.path} line {line}: state {state!r}; "
                        "allowed: COMPLETE, INVALID, FAIL"
                    )
                self._rows[row["config"]] = row

    def __len__(self) -> int:
        return len(self._rows)

    def configs(self) -> list[str]:
        """The canonical JSON of every config in the table."""
        return list(self._rows)

    def complete(self) -> list[dict[str, float]]:
        """The metrics of every COMPLETE row."""
        return [self._metrics(r) for r in self._rows.values() if r["state"] == "COMPLETE"]

    def metrics(self, config: Mapping[str, Any]) -> dict[str, float]:
        """The recorded metrics of `config` (raises as `__call__` does)."""
        return self(config).metrics

    def _metrics(self, row: Mapping[str, str]) -> dict[str, float]:
        skip = {"config", "state", "reason", *self.DETAIL_COLUMNS}
        return {k: float(v) for k, v in row.items() if k not in skip and v not in ("", None)}

    def __call__(self, config: Mapping[str, Any]) -> Any:
        from paretotune.errors import ConfigError, EvaluationError, InvalidConfigError
        from paretotune.evaluators.measurement import Measurement
        from paretotune.space import Config

        key = (config if isinstance(config, Config) else Config(config)).to_json()
        row = self._rows.get(key)
        if row is None:
            raise ConfigError(
                f"replay: config {key} is not in the table {self.path} ({len(self._rows)} "
                "configs); the study's space must be the space the table was built from"
            )
        if row["state"] == "INVALID":
            raise InvalidConfigError(row["reason"] or "invalid (no reason recorded)")
        if row["state"] == "FAIL":
            raise EvaluationError(row["reason"] or "failed (no reason recorded)")
        details: dict[str, Any] = {"replayed_from": self.path}
        for name in self.DETAIL_COLUMNS:
            value = row.get(name)
            if value not in ("", None):
                details[name] = value == "True" if value in ("True", "False") else float(value)
        return Measurement(metrics=self._metrics(row), details=details)


def wait_ms(ms: float) -> None:
    """Take `ms` milliseconds: sleep until just before the deadline, spin the rest (a bare
    sleep overshoots by a fixed amount, which would bias every ratio of two waits)."""
    deadline = time.perf_counter() + ms / 1e3
    rest = deadline - time.perf_counter() - 3e-4
    if rest > 0:
        time.sleep(rest)
    while time.perf_counter() < deadline:
        pass


class SleepEvaluator:
    """A fake engine that waits, timed by the real harness: a known truth to measure.

    A config's call takes ``base_ms * (1 + x)`` (its ``x`` key, default 0); the unmodified
    reference takes ``base_ms``. A call is timed paired with the reference
    (`evaluators.timing.time_paired`), so its `speedup` is 1 / (1 + x) up to the noise, with
    intervals in the details; `measure_pair` times two configs side by side for
    `Study.compare`, as `TaskEvaluator.measure_pair` does. `accuracy` is 1 - x**2 / 10.
    """

    def __init__(self, base_ms: float = 2.0, timing: Any = None) -> None:
        from paretotune.evaluators.timing import TimingPolicy

        self.base_ms = base_ms
        self.timing = timing or TimingPolicy(
            warmup_iters=2, min_window_iters=5, min_window_ms=20.0, stable_windows=3, max_windows=5
        )

    def _ms(self, config: Mapping[str, Any]) -> float:
        return self.base_ms * (1.0 + float(config.get("x", 0.0)))

    def _sample(self, ms: float) -> Any:
        from paretotune.evaluators.timing import _host_clock

        return _host_clock(lambda: wait_ms(ms))

    def __call__(self, config: Mapping[str, Any]) -> Any:
        from paretotune.evaluators.measurement import Measurement
        from paretotune.evaluators.timing import CI_LEVEL, time_paired, timing_metrics

        x = float(config.get("x", 0.0))
        paired = time_paired(self._sample(self._ms(config)), self._sample(self.base_ms), 1, self.timing)
        result = paired.candidate[0]
        metrics = {
            **timing_metrics(result), "accuracy": 1.0 - x * x / 10,
            "speedup": paired.speedup, "baseline_latency_p50_ms": paired.reference.p50_ms,
        }
        details = {
            **result.details(), **{f"{k}_ci": list(v) for k, v in result.intervals().items()},
            "speedup_ci": list(paired.speedup_interval()), "ci_level": CI_LEVEL,
            "baseline": {"window_ratios": paired.window_ratios, "block_ratios": paired.ratios},
        }
        return Measurement(metrics=metrics, details=details)

    def measure_pair(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> Any:
        from paretotune.evaluators.measurement import Measurement
        from paretotune.evaluators.timing import pair_side, time_paired

        paired = time_paired(self._sample(self._ms(b)), self._sample(self._ms(a)), 1, self.timing)
        sides = {
            "a": pair_side(paired.reference, accuracy=1.0 - float(a.get("x", 0.0)) ** 2 / 10),
            "b": pair_side(paired.candidate[0], accuracy=1.0 - float(b.get("x", 0.0)) ** 2 / 10),
        }
        details = {**sides, "window_ratios": [1.0 / r for r in paired.window_ratios],
                   "block_ratios": [1.0 / r for r in paired.ratios], "timing": "paired (fake waits)"}
        return Measurement(metrics=dict(sides["a"]["metrics"]), details=details)


#: for specs and the CLI: ``task: paretotune.testing:sleep_evaluator``
sleep_evaluator = SleepEvaluator()


def comparison_rows(rng: Any, processes: int, effect: float = 0.0, *, between: float = 0.02,
                    within: float = 0.005, windows: int = 3) -> list[dict[str, Any]]:
    """A synthetic A/B comparison's stored rows (`search.comparisons.summarize` reads them) of
    trials 1 (a) and 2 (b), p50 only: a known truth for the verdict's statistics.

    Each fresh process has its own level (the machine it got) and its own offset between the
    two sides (`between`, a log sd: one process's luck favours one side), and each window its
    own noise (`within`, a log sd); `effect` is the true log ratio a / b. `rng` is a
    `numpy.random.Generator`.
    """
    import numpy as np

    rows = []
    for k in range(processes):
        level, offset = rng.normal(0, 0.1), rng.normal(0, between)
        for role, shift in (("compare_a", effect + offset / 2), ("compare_b", -offset / 2)):
            w = 2.0 * np.exp(level + shift + rng.normal(0, within, windows))
            rows.append({"process": k, "run_id": "synthetic", "error": None,
                         "metrics": {"latency_p50_ms": float(np.median(w))},
                         "details": {"role": role, "pair": [1, 2], "n_samples": 100,
                                     "windows": {"latency_p50_ms": w.tolist()}}})
    return rows
