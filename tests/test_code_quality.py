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


#: where unpickling is allowed: the bytes a parent process sends its own child (stdin, a pipe,
#: Ray's task payload from the driver), never a file or anything another user could plant
PICKLE_ALLOWED = {"paretotune/workers/_entry.py", "paretotune/workers/ray_backend.py"}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _dangerous_calls(path: Path, root: Path = ROOT) -> list[str]:
    import ast

    rel = str(path.relative_to(root))
    tree = ast.parse(path.read_text(), filename=rel)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        keywords = {k.arg: k.value for k in node.keywords}
        where = f"{rel}:{node.lineno}"
        if owner == "torch" and name == "load":
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        if owner in ("pickle", "cloudpickle", "dill") and name in ("load", "loads") and rel not in PICKLE_ALLOWED:
            found.append(f"{where}: {owner}.{name} outside the parent-to-child pipe")
        if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
            found.append(f"{where}: yaml.{name} (use paretotune.yamlsafe.load or yaml.safe_load)")
        if owner == "subprocess" and name in SUBPROCESS_CALLS:
            shell = keywords.get("shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                found.append(f"{where}: subprocess.{name} with shell=")
            if node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                found.append(f"{where}: subprocess.{name} with a string command (give a list)")
        if owner == "os" and name in ("system", "popen"):
            found.append(f"{where}: os.{name} runs a shell")
        if owner == "np" and name == "load":
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{where}: np.load with allow_pickle")
    return found


def test_library_code_never_unpickles_files_or_runs_shells() -> None:
    """torch.load only with weights_only=True, pickle only on the parent-to-child pipe, no
    yaml.load, no shell=True and no string commands to subprocess, in paretotune/."""
    offenders = [hit for path in sorted((ROOT / "paretotune").rglob("*.py")) for hit in _dangerous_calls(path)]
    assert not offenders, "\n".join(offenders)


def test_the_dangerous_call_check_catches_each_kind(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    text = (
        "import pickle, subprocess, torch, yaml\n"
        "torch.load(f)\ntorch.load(f, weights_only=False)\npickle.loads(b)\nyaml.load(s)\n"
        "subprocess.run('ls', shell=True)\nsubprocess.Popen(f'ls {x}')\n"
    )
    bad.write_text(text)
    hits = _dangerous_calls(bad, tmp_path)
    assert len(hits) == 7, hits
