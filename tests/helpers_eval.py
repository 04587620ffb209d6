"""Evaluators for worker tests; trial processes import this module (tests/ is on PYTHONPATH)."""

from __future__ import annotations

import math
import os
import time
from typing import Any

FAILURES = {0.01: "raise", 0.02: "exit", 0.03: "hang", 0.04: "nan"}


def misbehaving(config: Any) -> dict[str, float]:
    mode = FAILURES.get(config["x"], "ok")
    if mode == "raise":
        raise ValueError("bad weights in layer 3")
    if mode == "exit":
        os._exit(3)
    if mode == "hang":
        time.sleep(3600)
    x = config["x"]
    return {"latency_p50_ms": 1.0 + x, "accuracy": math.nan if mode == "nan" else 1.0 - x * x}


def no_accuracy(config: Any) -> dict[str, float]:
    return {"latency_p50_ms": 1.0}


def no_baseline_latency(config: Any) -> dict[str, float]:
    return {"latency_p50_ms": float(config["batch_size"]), "accuracy": 0.9}


def slow(config: Any) -> dict[str, float]:
    """Half a second a trial, so a kill usually lands mid-trial."""
    time.sleep(0.5)
    x = config["x"]
    return {"latency_p50_ms": 1.0 + x, "accuracy": 1.0 - x * x}


def quick(config: Any) -> dict[str, float]:
    time.sleep(0.1)
    x = config["x"]
    return {"latency_p50_ms": 1.0 + x, "accuracy": 1.0 - x * x}


def two_seconds(config: Any) -> dict[str, float]:
    time.sleep(2.0)
    return {"latency_p50_ms": 1.0 + config["x"], "accuracy": 0.5}


def instant_x(config: Any) -> dict[str, float]:
    return {"latency_p50_ms": 1.0 + config["x"], "accuracy": 1.0 - config["x"]}


def per_process(config: Any) -> dict[str, float]:
    """Latency that depends on the process (its pid), so fresh processes show as a spread;
    x = 0.5 raises, like a config that breaks in one engine."""
    x = config["x"]
    if x == 0.5:
        raise ValueError("cannot build x=0.5")
    slow_process = 1.0 + (os.getpid() % 7) / 100.0  # 1.00 .. 1.06: one process's state
    latency = (1.0 + x) * slow_process * config.get("batch_size", 1)
    return {"latency_p50_ms": latency, "throughput": 1000.0 / latency, "accuracy": 1.0 - x * x,
            "pid": float(os.getpid())}


def negative_latency(config: Any) -> dict[str, float]:
    """x = 0.5 reports -5 ms (a broken timer), x = 0.6 an accuracy of 1.5: both outside their
    metric's domain."""
    x = config["x"]
    latency = -5.0 if x == 0.5 else 1.0 + x
    return {"latency_p50_ms": latency, "accuracy": 1.5 if x == 0.6 else 1.0 - x * x}


def accuracy_except_at_half(config: Any) -> dict[str, float]:
    """One bad config (x = 0.5) forgets a metric; every other returns it."""
    x = config["x"]
    if x == 0.5:
        return {"latency_p50_ms": 1.0 + x}
    return {"latency_p50_ms": 1.0 + x, "accuracy": 1.0 - x * x}


def fails_at_x_2(config: Any) -> dict[str, float]:
    """For a grid over x in {0, 1, 2}: its last point raises."""
    if config["x"] == 2:
        raise RuntimeError("the last grid point breaks")
    return {"latency_p50_ms": 1.0 + config["x"], "accuracy": 0.9}


def fake_server(config: Any) -> dict[str, float]:
    """A server-scenario evaluator without an engine: bigger batches and more instances
    sustain more QPS, a longer queue delay costs p99."""
    qps = 100.0 * config.get("max_batch_size", 1) ** 0.5 * config.get("instances", 1)
    return {"server_qps": qps, "server_p99_ms": 1.0 + config.get("max_queue_delay_us", 0) / 1000,
            "accuracy": 0.9}


def wait_for_completed(name: str, url: str, n: int, timeout_s: float = 60.0) -> bool:
    """Poll until study `name` holds `n` completed trials (it may not exist yet); False on timeout."""
    import paretotune as pt

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if pt.load_study(name, url).counts()["COMPLETE"] >= n:
                return True
        except pt.ParetotuneError:
            pass
        time.sleep(0.2)
    return False


def flaky_ask(monkeypatch: Any, fail_on_call: int) -> list[int]:
    """Optuna's ask creates its trial, then loses the store (as when PostgreSQL restarts between
    the trial's insert and the sampler's read) on call ``fail_on_call``; the worker's retry asks
    again, and the first trial has no claim. Returns the numbers asked, in order."""
    import optuna
    import sqlalchemy as sa

    real_ask = optuna.Study.ask
    asked: list[int] = []

    def ask(self: optuna.Study, *args: object, **kwargs: object) -> optuna.Trial:
        trial = real_ask(self, *args, **kwargs)
        asked.append(trial.number)
        if len(asked) == fail_on_call:
            raise sa.exc.OperationalError("SELECT trials", {}, Exception("server closed the connection unexpectedly"))
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask)
    return asked
