"""YAML study specs: what `create_study` takes, plus the task import path and the budget.

    name: digits-cpu
    storage: sqlite:///paretotune.db        # optional; --storage overrides
    task: examples.digits:task              # a pt.Task or a callable(config) -> metrics
    space: standard                         # or {standard: {batch_sizes: [1, 32]}}, or a space
    objectives: {latency_p50_ms: min, accuracy: max}
    constraints: {accuracy_drop: ["<=", 0.01]}
    sampler: tpe
    seed: 0
    budget: {n_trials: 30, n_workers: 2, confirm: 3}   # confirm: re-measure the front after
    scenario: {kind: server, p99_ms: 25}    # optional; default single_stream (see create_study)

The task import path runs the user's code on every machine that loads the spec: only run
specs you trust.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paretotune import yamlsafe
from paretotune.errors import ConfigError
from paretotune.search.spec import StudySpec

#: a spec file's keys: the study's own (`StudySpec.FIELDS`), plus where and how long to run it
RUN_KEYS = ("name", "storage", "budget")
SPEC_KEYS = {*RUN_KEYS, *StudySpec.FIELDS}
REQUIRED = ("name", "objectives")
BUDGET_KEYS = {"n_trials", "n_workers", "confirm"}
#: the largest spec file read (a spec is a page of YAML; see yamlsafe.MAX_NODES for aliases)
MAX_SPEC_BYTES = 4 * 1024**2


@dataclass
class RunSpec:
    """A parsed spec file: the study arguments, the budget and the storage."""

    name: str
    study_args: dict[str, Any]
    storage: str | None = None
    n_trials: int = 20
    n_workers: int = 1
    #: fresh processes to confirm the front in after the study (0: do not confirm)
    confirm: int = 0
    source: str = "<spec>"
    raw: dict[str, Any] = field(default_factory=dict)


def _fail(source: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {msg}")


def parse_spec(data: Any, source: str = "<spec>") -> RunSpec:
    if not isinstance(data, Mapping):
        raise _fail(source, f"a spec must be a YAML mapping of keys {sorted(SPEC_KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise _fail(source, f"unknown key(s) {unknown}; allowed keys: {sorted(SPEC_KEYS)}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise _fail(source, f"missing required key(s) {missing}")
    if "space" not in data and "task" not in data:
        raise _fail(source, "give `space`, or a `task` whose standard space is used")
    budget = data.get("budget") or {}
    if not isinstance(budget, Mapping):
        raise _fail(source, f"budget must be a mapping with keys {sorted(BUDGET_KEYS)}, got {budget!r}")
    unknown = sorted(set(budget) - BUDGET_KEYS)
    if unknown:
        raise _fail(source, f"budget: unknown key(s) {unknown}; allowed: {sorted(BUDGET_KEYS)}")
    for key in BUDGET_KEYS:
        v = budget.get(key)
        least = 0 if key == "confirm" else 1
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < least):
            raise _fail(source, f"budget.{key} must be an integer >= {least}, got {v!r}")
    task = data.get("task")
    if task is not None and (not isinstance(task, str) or ":" not in task):
        raise _fail(source, f"task must be an import path 'package.module:attribute', got {task!r}")
    args: dict[str, Any] = {k: data[k] for k in StudySpec.FIELDS if k != "space" and data.get(k) is not None}
    if isinstance(args.get("constraints"), Mapping):
        args["constraints"] = {k: tuple(v) if isinstance(v, list) else v for k, v in args["constraints"].items()}
    args["space"] = data.get("space", "standard")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise _fail(source, f"name must be a non-empty string, got {name!r}")
    return RunSpec(
        name=name,
        study_args=args,
        storage=data.get("storage"),
        n_trials=budget.get("n_trials", 20),
        n_workers=budget.get("n_workers", 1),
        confirm=budget.get("confirm", 0),
        source=source,
        raw=dict(data),
    )


def load_spec_file(path: str | Path) -> RunSpec:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"spec: {str(p)!r} is a directory; give the path of a YAML spec file")
    if not p.is_file():
        raise ConfigError(f"spec file {str(p)!r} does not exist")
    size = p.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise ConfigError(f"spec file {str(p)!r} is {size:,} bytes; at most {MAX_SPEC_BYTES:,} are allowed")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"spec file {str(p)!r} cannot be read: {exc}") from None
    try:
        data = yamlsafe.load(text)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: malformed YAML{where}: {problem}") from None
    return parse_spec(data, str(p))
