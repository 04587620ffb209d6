"""The pycuda context the TensorRT engine pushes is popped at exit: pycuda calls abort() when
its context stack is not empty at exit, which turned every passing run into a SIGABRT."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from paretotune.evaluators import tensorrt_engine as te

ROOT = Path(__file__).resolve().parents[2]


def _fake_pycuda(stack: list[str]) -> tuple[types.ModuleType, types.ModuleType]:
    pycuda = types.ModuleType("pycuda")
    driver = types.ModuleType("pycuda.driver")

    class Context:
        def push(self) -> None:
            stack.append("primary")

        def pop(self) -> None:
            stack.pop()

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return 1

        def retain_primary_context(self) -> Context:
            return Context()

    driver.init = lambda: None  # type: ignore[attr-defined]
    driver.Device = Device  # type: ignore[attr-defined]
    pycuda.driver = driver  # type: ignore[attr-defined]
    return pycuda, driver


def test_the_context_is_pushed_once_and_popped_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    stack: list[str] = []
    pycuda, driver = _fake_pycuda(stack)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setattr(te, "_CUDA_CONTEXT", None)
    registered: list[Any] = []
    monkeypatch.setattr(te.atexit, "register", registered.append)
    assert te.cuda() is driver and te.cuda() is driver
    assert stack == ["primary"] and registered == [te.release_cuda]
    te.release_cuda()
    assert stack == [] and te._CUDA_CONTEXT is None
    te.release_cuda()  # twice is harmless
    assert stack == []


def test_a_process_that_used_the_engine_exits_cleanly(tmp_path: Path) -> None:
    """A fake pycuda that aborts at exit, as the real one does, when a context is still pushed."""
    fake = tmp_path / "pycuda"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "driver.py").write_text(textwrap.dedent("""
        import atexit, os
        STACK = []
        def _check():
            if STACK:
                os.abort()  # pycuda: "context stack was not empty upon module cleanup"
        atexit.register(_check)
        def init():
            pass
        class Context:
            def push(self):
                STACK.append(self)
            def pop(self):
                STACK.pop()
        class Device:
            def __init__(self, index):
                pass
            @staticmethod
            def count():
                return 1
            def retain_primary_context(self):
                return Context()
    """))
    code = "from paretotune.evaluators import tensorrt_engine as te; te.cuda(); print('ok')"
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "ok"
