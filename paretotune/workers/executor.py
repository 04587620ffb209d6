"""`TrialExecutor`: runs evaluations in a child process, with a timeout.

One long-lived child per worker keeps the evaluator's in-memory caches warm across trials. A
trial that raises comes back as an error; one that crashes the child, is killed by a signal or
overruns its timeout has the child's whole process group killed, is reported with its reason,
and the next trial gets a fresh child.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from paretotune.errors import InvalidConfigError
from paretotune.space import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one evaluation gave: metrics, or an error/invalid reason. Never both."""

    metrics: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    invalid: str | None = None
    elapsed_s: float = 0.0


def _normalize(result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An evaluator may return a Measurement (``.metrics``/``.details``) or a plain mapping."""
    if hasattr(result, "metrics") and isinstance(result.metrics, Mapping):
        return dict(result.metrics), dict(getattr(result, "details", {}) or {})
    if isinstance(result, Mapping):
        return dict(result), {}
    raise TypeError(
        f"the evaluator must return a mapping of metric name to number (or a Measurement), "
        f"got {type(result).__name__}"
    )


def _child_main(conn: Connection, payload: bytes) -> None:
    os.setsid()  # own process group: a timeout kills the trial and everything it started
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        evaluator = cloudpickle.loads(payload)
    except Exception as exc:
        conn.send(("error", f"cannot load the evaluator in the trial process: {type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        try:
            metrics, details = _normalize(evaluator(Config.from_json(msg)))
            conn.send(("ok", metrics, details))
        except InvalidConfigError as exc:
            conn.send(("invalid", str(exc)))
        except BaseException as exc:  # a trial's failure is data, not a crash of the worker
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            log.debug("trial raised:\n%s", "".join(tb))
            conn.send(("error", f"{type(exc).__name__}: {exc}".strip()))


def _signal_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (likely out of memory)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"trial process exited with code {code}"


class TrialExecutor:
    """Evaluate configs in a child process; ``timeout_s`` bounds each evaluation."""

    def __init__(self, evaluator: Callable[[Config], Any], timeout_s: float | None = None) -> None:
        self._payload = cloudpickle.dumps(evaluator)
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_child_main, args=(child, self._payload), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def run(self, config: Config, on_wait: Callable[[], None] | None = None) -> Outcome:
        """Evaluate one config. ``on_wait`` is called about once a second while it runs."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        if self._conn is None:
            raise RuntimeError("trial process is not connected")
        t0 = time.monotonic()
        try:
            self._conn.send(config.to_json())
        except (BrokenPipeError, OSError):
            return self._dead(t0)
        while True:
            waited = time.monotonic() - t0
            if self.timeout_s is not None and waited >= self.timeout_s:
                self.kill()
                return Outcome(error=f"timeout after {self.timeout_s:g} s", elapsed_s=waited)
            step = 1.0 if self.timeout_s is None else max(0.0, min(1.0, self.timeout_s - waited))
            try:
                ready = self._conn.poll(step)
            except (EOFError, OSError):
                return self._dead(t0)
            if ready:
                try:
                    msg = self._conn.recv()
                except (EOFError, OSError):
                    return self._dead(t0)
                elapsed = time.monotonic() - t0
                if msg[0] == "ok":
                    return Outcome(metrics=msg[1], details=msg[2], elapsed_s=elapsed)
                if msg[0] == "invalid":
                    return Outcome(invalid=msg[1], elapsed_s=elapsed)
                return Outcome(error=msg[1], elapsed_s=elapsed)
            if not self._proc.is_alive():
                return self._dead(t0)
            if on_wait is not None:
                on_wait()

    def _dead(self, t0: float) -> Outcome:
        proc = self._proc
        proc.join(timeout=5)
        code = proc.exitcode if proc.exitcode is not None else -signal.SIGKILL
        self._cleanup()
        return Outcome(error=_signal_reason(code), elapsed_s=time.monotonic() - t0)

    def kill(self) -> None:
        """Kill the trial process and every process it started."""
        proc = self._proc
        if proc is None:
            return
        if proc.pid is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.join(timeout=5)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._proc = None

    def close(self) -> None:
        """Stop the trial process politely, then firmly."""
        if self._proc is None:
            return
        try:
            if self._conn is not None:
                self._conn.send(None)
            self._proc.join(timeout=5)
        except (BrokenPipeError, OSError):
            pass
        if self._proc is not None and self._proc.is_alive():
            self.kill()
        self._cleanup()

    def __enter__(self) -> TrialExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
