"""The import rule of docs/architecture.md: a package imports only the layers below it (the
`[tool.importlinter]` contract in pyproject.toml), with the one late import from `Study`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)})


def test_packages_import_only_the_layers_below_them() -> None:
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_an_import_upwards_breaks_the_contract(tmp_path: Path) -> None:
    """The contract is live: storage importing workers (even late, inside a function) fails it."""
    shutil.copytree(ROOT / "paretotune", tmp_path / "paretotune",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "paretotune" / "storage" / "retry.py"
    target.write_text(target.read_text() + "\n\ndef _late():\n    import paretotune.workers.reaper\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "paretotune.storage is not allowed to import paretotune.workers" in proc.stdout
    assert "paretotune.storage.retry -> paretotune.workers.reaper" in proc.stdout


def test_only_one_module_touches_optunas_private_api() -> None:
    """Optuna's private names (``_storage``, ``_study_id``, ``optuna._hypervolume``...) are
    used in search/_optuna.py alone, so an Optuna upgrade that moves them breaks one module."""
    import re

    private = re.compile(r"\._storage\b|\._study_id\b|\._trial_id\b|\boptuna(\.\w+)*\._[a-z]\w*")
    offenders = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in sorted((ROOT / "paretotune").rglob("*.py")) if path.name != "_optuna.py"
        for i, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)
    ]
    assert offenders == []
