"""The machine's timing slot: timed windows never overlap other workers' work."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from paretotune.evaluators import TaskEvaluator
from paretotune.evaluators.slot import ENV, TimingSlot, slot_name, timing_slot

from _evmodels import FAST

WORKER = r"""
import json, sys, time
from paretotune.evaluators.slot import TimingSlot
slot = TimingSlot("t", sys.argv[1])
out = []
for i in range(6):
    with slot.shared():
        a = time.monotonic(); time.sleep(0.02); out.append(("shared", a, time.monotonic()))
        with slot.exclusive():
            a = time.monotonic(); time.sleep(0.01); out.append(("exclusive", a, time.monotonic()))
        a = time.monotonic(); time.sleep(0.01); out.append(("shared", a, time.monotonic()))
print(json.dumps(out))
"""


def _held(path: str, mode: int) -> bool:
    """Whether another holder keeps `path` from being locked with `mode` right now."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _refusals(slot: TimingSlot, what: str, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set once `slot` asks for a lock for `what` ("shared", "exclusive") and is
    refused it (its first, non-blocking try fails); the slot's own bounded wait then goes on."""
    refused = threading.Event()
    real = slot._lock

    def lock(fd: int, op: int, why: str) -> None:
        if why == what:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)  # taken: `real` takes it again at once
            except BlockingIOError:
                refused.set()
        real(fd, op, why)

    monkeypatch.setattr(slot, "_lock", lock)
    return refused


def test_exclusive_windows_overlap_nothing_of_other_processes(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    runs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for i, run in enumerate(runs):
        for kind, start, end in run:
            if kind != "exclusive":
                continue
            for j, other in enumerate(runs):
                if j == i:
                    continue
                for other_kind, o_start, o_end in other:
                    overlap = min(end, o_end) - max(start, o_start)
                    assert overlap <= 0, f"process {i}'s timed window overlaps process {j}'s {other_kind} work"
    # shared work of different processes does run side by side (the slot is no global mutex)
    shared = [(a, b) for run in runs[:1] for k, a, b in run if k == "shared"]
    others = [(a, b) for run in runs[1:] for k, a, b in run if k == "shared"]
    assert any(min(b, d) - max(a, c) > 0 for a, b in shared for c, d in others)


def test_a_waiting_timer_goes_before_later_shared_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builder, timer, late = (TimingSlot("t", str(tmp_path)) for _ in range(3))
    order: list[str] = []
    late_refused = _refusals(late, "shared", monkeypatch)

    def time_it() -> None:
        with timer.exclusive():
            order.append("timer")

    def build() -> None:
        with late.shared():
            order.append("late builder")

    with builder.shared():
        t1 = threading.Thread(target=time_it)
        t1.start()
        deadline = time.monotonic() + 30
        while not _held(timer._turnstile_path, fcntl.LOCK_EX):  # the timer is queued
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t2 = threading.Thread(target=build)
        t2.start()
        # The late builder is turned away at the turnstile the waiting timer holds; the timer
        # cannot time beside this build. Both stay so while the build holds the slot.
        assert late_refused.wait(30), "the late builder was let in while a timer waits"
        assert order == [], "a shared holder was let in while a timer waits, or the timer ran beside a build"
    t1.join(30)
    t2.join(30)
    assert not t1.is_alive() and not t2.is_alive()
    assert order == ["timer", "late builder"]


def test_nesting_in_one_process_does_not_deadlock(tmp_path: Path) -> None:
    slot = TimingSlot("t", str(tmp_path))
    with slot.shared():
        with slot.shared():
            assert _held(slot.path, fcntl.LOCK_EX)  # shared: others may share, not time
            assert not _held(slot.path, fcntl.LOCK_SH)
            with slot.exclusive():
                assert _held(slot.path, fcntl.LOCK_SH)  # exclusive: nobody else at all
                with slot.exclusive():
                    pass
            assert not _held(slot.path, fcntl.LOCK_SH)  # back to shared
            assert _held(slot.path, fcntl.LOCK_EX)
    assert not _held(slot.path, fcntl.LOCK_EX)


def test_a_killed_holder_frees_the_slot(tmp_path: Path) -> None:
    marker = tmp_path / "holding"
    code = (
        "import sys, time, pathlib\n"
        "from paretotune.evaluators.slot import TimingSlot\n"
        "s = TimingSlot('t', sys.argv[1])\n"
        "with s.exclusive():\n"
        "    pathlib.Path(sys.argv[2]).touch(); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        slot = TimingSlot("t", str(tmp_path))
        assert _held(slot.path, fcntl.LOCK_SH)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        with slot.exclusive():
            pass
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_environment_turns_it_off_or_moves_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV, "off")
    assert not timing_slot().enabled
    monkeypatch.setenv(ENV, str(tmp_path))
    slot = timing_slot()
    assert slot.enabled and Path(slot.path).parent == tmp_path
    assert slot_name(False) == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert slot_name(True) == "gpu3"


def test_the_evaluator_times_in_the_slot(tiny_task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, str(tmp_path / "slots"))
    (tmp_path / "slots").mkdir()
    evaluator = TaskEvaluator(tiny_task, cache_dir=tmp_path / "cache", timing=FAST)
    m = evaluator({"engine": "onnxruntime"})
    assert Path(m.details["timing_slot"]["path"]).parent == tmp_path / "slots"
    assert m.details["timing_slot"]["wait_s"] >= 0

    # while another process's build holds the slot, the evaluator builds but does not time
    other = TimingSlot("cpu", str(tmp_path / "slots"))
    timing_refused = _refusals(timing_slot("cpu"), "exclusive", monkeypatch)  # the evaluator's slot
    result: dict[str, object] = {}

    def call() -> None:
        result["m"] = evaluator({"engine": "onnxruntime", "batch_size": 2})

    with other.shared():
        thread = threading.Thread(target=call)
        thread.start()
        assert timing_refused.wait(120), "the evaluator never asked for the slot to time in"
        # hold on a while, so the evaluator truly waits (released at once, its retry could
        # take the slot within the 0.1 ms that wait_s is rounded to)
        time.sleep(0.3)
        assert "m" not in result, "the evaluator timed while another worker held the slot"
    thread.join(120)
    assert not thread.is_alive()
    assert result["m"].details["timing_slot"]["wait_s"] >= 0.25  # type: ignore[attr-defined]

    off = TaskEvaluator(tiny_task, cache_dir=tmp_path / "cache", timing=FAST, exclusive_timing=False)
    assert off({"engine": "onnxruntime"}).details["timing_slot"] is None
