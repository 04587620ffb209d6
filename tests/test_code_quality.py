"""ruff and mypy run in `make test`, so CI enforces the house habits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "paretotune", "tests", "benchmarks", "examples"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_asserts_prints_or_shell_in_library_code() -> None:
    offenders = []
    for path in (ROOT / "paretotune").rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("assert ") or "shell=True" in stripped or "sys.maxsize" in stripped:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {stripped}")
            if stripped.startswith("print(") and path.name != "cli.py":
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {stripped}")
    assert not offenders, "\n".join(offenders)
