"""`TrialExecutor`: runs evaluations in a child process, with a timeout.

One long-lived child per worker keeps the evaluator's in-memory caches warm across trials. A
trial that raises comes back as an error; one that crashes the child, is killed by a signal or
overruns its timeout has the child's whole process group killed, is reported with its reason,
and the next trial gets a fresh child.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from paretotune.space import Config
from paretotune.workers.lifecycle import Outcome

log = logging.getLogger(__name__)


def _signal_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (likely out of memory)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"trial process exited with code {code} before returning a result"


class TrialExecutor:
    """Evaluate configs in a child process; ``timeout_s`` bounds each evaluation."""

    def __init__(self, evaluator: Callable[[Config], Any], timeout_s: float | None = None) -> None:
        self._payload = cloudpickle.dumps(evaluator)
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        parent, child = socket.socketpair()
        fd = child.fileno()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "paretotune.workers._entry", "trial", str(fd)],
            pass_fds=(fd,),
            start_new_session=True,  # own process group: a timeout kills all it started
        )
        child.close()
        self._conn = Connection(parent.detach())
        self._conn.send_bytes(self._payload)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def run(self, config: Config, on_wait: Callable[[], None] | None = None) -> Outcome:
        """Evaluate one config. ``on_wait`` is called about once a second while it runs."""
        if self._proc is None or self._proc.poll() is not None:
            self._cleanup()
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
                return Outcome.failed(f"timeout after {self.timeout_s:g} s", waited)
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
                    return Outcome.complete(msg[1], msg[2], elapsed)
                if msg[0] == "invalid":
                    return Outcome.invalid(msg[1], elapsed)
                return Outcome.failed(msg[1], elapsed)
            if self._proc is None or self._proc.poll() is not None:
                return self._dead(t0)
            if on_wait is not None:
                on_wait()

    def _dead(self, t0: float) -> Outcome:
        code = -signal.SIGKILL
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._cleanup()
        return Outcome.failed(_signal_reason(code), time.monotonic() - t0)

    def kill(self) -> None:
        """Kill the trial process and every process it started."""
        proc = self._proc
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("trial process %d did not die after SIGKILL", proc.pid)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        self._conn = None
        self._proc = None

    def close(self) -> None:
        """Stop the trial process politely, then firmly."""
        if self._proc is None:
            return
        try:
            if self._conn is not None:
                self._conn.send(None)
            self._proc.wait(timeout=5)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            pass
        if self._proc is not None and self._proc.poll() is None:
            self.kill()
        self._cleanup()

    def __enter__(self) -> TrialExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

