from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import paretotune as pt

#: every public name and the module that defines it: `pt.X` must be that very object, so a
#: re-export that drifts (a stale copy, a wrapper, a name rebound on the way) fails here
DEFINED_IN = {
    "METRICS": "paretotune.search.objectives",
    "Choice": "paretotune.space.dimensions",
    "Config": "paretotune.space.config",
    "ConfigError": "paretotune.errors",
    "EvaluationError": "paretotune.errors",
    "Float": "paretotune.space.dimensions",
    "Front": "paretotune.search.pareto",
    "Int": "paretotune.space.dimensions",
    "InvalidConfigError": "paretotune.errors",
    "Measurement": "paretotune.evaluators.measurement",
    "Offline": "paretotune.space.scenario",
    "ParetotuneError": "paretotune.errors",
    "PerLayer": "paretotune.space.dimensions",
    "SearchSpace": "paretotune.space.space",
    "Server": "paretotune.space.scenario",
    "SingleStream": "paretotune.space.scenario",
    "StorageError": "paretotune.errors",
    "Study": "paretotune.search.study",
    "StudyError": "paretotune.errors",
    "Task": "paretotune.evaluators.task",
    "TaskError": "paretotune.errors",
    "Trial": "paretotune.search.trial",
    "TrialState": "paretotune.search.trial",
    "create_study": "paretotune.api",
    "export": "paretotune.export.bundle",
    "load_exported": "paretotune.export.load",
    "load_study": "paretotune.api",
    "register_sampler": "paretotune.search.samplers",
    "sampler_names": "paretotune.search.samplers",
    "submit": "paretotune.api",
}


def test_all_matches_the_public_api() -> None:
    assert set(pt.__all__) == set(DEFINED_IN) | {"__version__"}
    public = {n for n in dir(pt) if not n.startswith("_") and not isinstance(getattr(pt, n), type(pt))}
    assert public - set(pt.__all__) == set(), "public names missing from __all__"


@pytest.mark.parametrize("name", sorted(DEFINED_IN))
def test_each_public_name_is_the_object_its_module_defines(name: str) -> None:
    home = DEFINED_IN[name]
    obj = getattr(pt, name)
    assert obj is getattr(importlib.import_module(home), name)
    if isinstance(obj, type) or callable(obj):
        assert obj.__module__ == home, f"pt.{name} is defined in {obj.__module__}, not {home}"


def test_the_error_tree_and_the_version() -> None:
    errors = [pt.ConfigError, pt.EvaluationError, pt.InvalidConfigError, pt.StorageError, pt.StudyError, pt.TaskError]
    assert all(issubclass(e, pt.ParetotuneError) for e in errors)
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert declared is not None and pt.__version__ == declared.group(1)
