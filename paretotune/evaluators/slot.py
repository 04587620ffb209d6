"""One timing slot per machine: a timed window never runs beside another trial's work.

Two workers on one machine share its cores, caches and memory bandwidth, so a latency timed
while another worker exports or quantizes a model is that build's cost too (on the 2-core CI
machine, +53% for MiniLM at batch 1). Workers therefore share a lock file: building, the
accuracy pass and loading a task hold it *shared* (many at once), timing holds it *exclusive*
(alone). A worker that wants to time stops new shared holders from entering (a turnstile), so
timing is never starved by a stream of builds; it waits only for the builds already running.

The lock is `flock(2)` on files in the temporary directory, so it spans every paretotune
process on the machine, local pool and Ray workers alike, and the kernel releases it when a
holder dies, even by SIGKILL. CPU engines share the machine's slot; a GPU engine uses one slot
per GPU (its timing is the GPU's, its building is not the CPU timings' concern).

`PARETOTUNE_TIMING_SLOT=off` turns it off; any other value is the directory for the lock files
(default: the system's temporary directory).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "PARETOTUNE_TIMING_SLOT"
OFF = ("off", "0", "false", "no")


class TimingSlot:
    """A machine-wide readers/writer lock on `<directory>/paretotune-timing-<name>.lock`.

    One object per process and name (`timing_slot`), because the state (what this process
    holds) must be shared by nested users: the trial process holds the slot shared while it
    loads a task, the evaluator holds it shared while it builds, and exclusive while it times.
    Not for use by several threads at once.
    """

    def __init__(self, name: str, directory: str | None) -> None:
        self.name = name
        self.enabled = directory is not None
        base = directory or ""
        self.path = os.path.join(base, f"paretotune-timing-{name}.lock")
        self._turnstile_path = os.path.join(base, f"paretotune-timing-{name}.turnstile")
        self._fd: int | None = None
        self._turnstile_fd: int | None = None
        self._shared = 0  # nesting depth of shared()
        self._exclusive = 0  # nesting depth of exclusive()
        #: seconds the last outermost exclusive() waited for the slot
        self.last_wait_s = 0.0

    def __repr__(self) -> str:
        return f"TimingSlot({self.path!r}, enabled={self.enabled})"

    def _open(self) -> tuple[int, int]:
        if self._fd is None or self._turnstile_fd is None:
            # O_RDONLY is enough for flock, so a lock file another user created still works
            flags = os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self.path, flags, 0o666)
            self._turnstile_fd = os.open(self._turnstile_path, flags, 0o666)
        return self._fd, self._turnstile_fd

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Work that may run beside other work but not beside a timed window."""
        if not self.enabled or self._shared or self._exclusive:
            self._shared += 1
            try:
                yield
            finally:
                self._shared -= 1
            return
        fd, turnstile = self._open()
        fcntl.flock(turnstile, fcntl.LOCK_EX)  # wait behind a worker that wants to time
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """A timed window: nothing else of paretotune's runs on the slot meanwhile."""
        if not self.enabled or self._exclusive:
            self._exclusive += 1
            try:
                yield
            finally:
                self._exclusive -= 1
            return
        fd, turnstile = self._open()
        started = time.perf_counter()
        if self._shared:  # this process's own shared hold would block it: give it up
            fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.last_wait_s = time.perf_counter() - started
            self._exclusive += 1
            try:
                yield
            finally:
                self._exclusive -= 1
                # back to what the caller held; a downgrade from exclusive never waits
                fcntl.flock(fd, fcntl.LOCK_SH if self._shared else fcntl.LOCK_UN)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)


_SLOTS: dict[tuple[str, str | None], TimingSlot] = {}


def slot_directory() -> str | None:
    """Where the lock files live (`$PARETOTUNE_TIMING_SLOT`), or None when it is off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    return value or tempfile.gettempdir()


def timing_slot(name: str = "cpu") -> TimingSlot:
    """This process's `TimingSlot` for `name` ("cpu", or "gpu<N>" per GPU)."""
    key = (name, slot_directory())
    if key not in _SLOTS:
        _SLOTS[key] = TimingSlot(name, key[1])
    return _SLOTS[key]


def slot_name(on_gpu: bool) -> str:
    """The slot an engine's timing uses: the machine's CPUs, or its (first visible) GPU."""
    if not on_gpu:
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return f"gpu{visible or '0'}"
