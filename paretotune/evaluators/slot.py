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

`PARETOTUNE_TIMING_SLOT=off` turns it off; any other value is the directory for the lock files.
The default directory is private to the user (`$XDG_RUNTIME_DIR/paretotune`, else
`<tmp>/paretotune-<uid>`, mode 0700, refused when another user owns it): a lock file in a
world-writable place could be held by anyone, and every study would then wait on it.

A wait is bounded: after `WARN_AFTER_S` it logs who holds the slot (pids from /proc/locks),
and after `$PARETOTUNE_TIMING_SLOT_MAX_WAIT_S` (default `DEFAULT_MAX_WAIT_S`) it raises
EvaluationError, so the trial fails with the holder named instead of hanging.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from paretotune.errors import ConfigError, EvaluationError

log = logging.getLogger(__name__)

ENV = "PARETOTUNE_TIMING_SLOT"
MAX_WAIT_ENV = "PARETOTUNE_TIMING_SLOT_MAX_WAIT_S"
OFF = ("off", "0", "false", "no")
#: seconds a trial may wait for the slot before it fails (a timed window takes seconds; a
#: whole serving measurement about a minute)
DEFAULT_MAX_WAIT_S = 900.0
#: seconds of waiting after which the holders are logged (then again every such period)
WARN_AFTER_S = 60.0
_POLL_S = (0.001, 0.02)  # first and longest sleep between tries


def max_wait_s() -> float:
    """The documented limit on one wait for the slot (`$PARETOTUNE_TIMING_SLOT_MAX_WAIT_S`)."""
    raw = os.environ.get(MAX_WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{MAX_WAIT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def lock_holders(path: str) -> list[int]:
    """Pids holding a flock on `path`, read from /proc/locks ([] where that is unknown)."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    want = f":{st.st_ino}"
    pids = []
    for line in lines:
        parts = line.split()
        if "->" in parts:  # a waiter, not a holder
            continue
        # matched on the inode alone: on overlay file systems /proc/locks shows another device
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].endswith(want) and parts[4].isdigit():
            pids.append(int(parts[4]))
    return sorted(set(pids))


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
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
            try:
                self._fd = os.open(self.path, flags, 0o600)
                self._turnstile_fd = os.open(self._turnstile_path, flags, 0o600)
            except OSError as exc:
                raise EvaluationError(
                    f"cannot open the timing slot's lock file in {os.path.dirname(self.path)!r}: {exc} "
                    f"(set {ENV} to a directory of yours, or to 'off')"
                ) from None
        return self._fd, self._turnstile_fd

    def _lock(self, fd: int, op: int, what: str) -> None:
        """flock with a bounded wait: holders logged after WARN_AFTER_S, EvaluationError
        after max_wait_s()."""
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        started = time.monotonic()
        limit = max_wait_s()
        warn_at = WARN_AFTER_S
        sleep = _POLL_S[0]
        path = self.path if fd == self._fd else self._turnstile_path
        while True:
            time.sleep(sleep)
            sleep = min(sleep * 2, _POLL_S[1])
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            waited = time.monotonic() - started
            if waited >= warn_at or waited >= limit:
                holders = lock_holders(path)
                who = f"pid {', '.join(map(str, holders))}" if holders else "an unknown process"
                if waited >= limit:
                    raise EvaluationError(
                        f"waited {waited:.0f} s for the machine's timing slot ({what}) held by {who} "
                        f"on {path}; the limit is {limit:g} s ({MAX_WAIT_ENV})"
                    )
                log.warning("waiting %.0f s for the timing slot (%s): held by %s on %s", waited, what, who, path)
                warn_at += WARN_AFTER_S

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
        self._lock(turnstile, fcntl.LOCK_EX, "shared")  # wait behind a worker that wants to time
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        self._lock(fd, fcntl.LOCK_SH, "shared")
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
        # A wait that ends in EvaluationError leaves the caller's shared hold given up: the
        # error fails the trial, and shared() unwinds right after.
        self._lock(turnstile, fcntl.LOCK_EX, "exclusive")
        try:
            self._lock(fd, fcntl.LOCK_EX, "exclusive")
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


def private_directory() -> str:
    """This user's directory for the lock files, created 0700; refused when it is a symlink,
    belongs to someone else, or is open to others (then another user could hold our lock)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    base = os.path.join(runtime, "paretotune") if runtime and os.path.isdir(runtime) else os.path.join(
        tempfile.gettempdir(), f"paretotune-{os.getuid()}"
    )
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise EvaluationError(f"cannot create the timing slot's directory {base!r}: {exc}") from None
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise EvaluationError(
            f"the timing slot's directory {base!r} is not a private directory of this user "
            f"(owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}); remove it, or set {ENV} "
            "to a directory of yours"
        )
    return base


def slot_directory() -> str | None:
    """Where the lock files live (`$PARETOTUNE_TIMING_SLOT`, else this user's private
    directory), or None when it is off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    return value or private_directory()


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
