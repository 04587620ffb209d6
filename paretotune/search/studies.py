"""Creating a study from its `StudySpec`, and reopening it from the store by name."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from paretotune.errors import ConfigError, StudyError
from paretotune.search.spec import StudySpec
from paretotune.search.study import Study
from paretotune.storage import StudyStore

log = logging.getLogger(__name__)


def _spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if json.dumps(old.get(k), sort_keys=True) != json.dumps(new.get(k), sort_keys=True))


def create_study_from_spec(
    name: str, store: StudyStore, study_spec: StudySpec, *, load_if_exists: bool = False
) -> Study:
    """Create the study (Optuna record, stored spec, queued baseline) or reopen it.

    An existing study with the same spec is reopened. One with a different spec is an error
    unless ``load_if_exists`` asks to load it as it is (its stored spec wins).
    """
    check_study_name(name)
    spec = study_spec.to_dict()
    existing = store.load_spec(name)
    if existing is None:
        objectives: dict[str, str] = study_spec.objectives
        directions = [
            optuna.study.StudyDirection.MINIMIZE if d == "min" else optuna.study.StudyDirection.MAXIMIZE
            for d in objectives.values()
        ]
        ostudy = optuna.create_study(
            study_name=name, storage=store.optuna_storage(), directions=directions, load_if_exists=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ostudy.set_metric_names(list(objectives))
        if store.save_spec(name, spec):
            study = Study(name, store, spec)
            study.enqueue_baseline()
            study.enqueue_warm_start()
            return study
        # another process created the same study a moment ago: join it like a second run would
        existing = store.load_spec(name)
        if existing is None:  # pragma: no cover - the row cannot vanish: rows are never deleted
            raise StudyError(f"study {name!r}: its row in {store.masked_url} disappeared while creating it")
    diff = _spec_diff(existing, spec)
    if diff and not load_if_exists:
        raise StudyError(
            f"study {name!r} already exists in {store.masked_url} with a different spec "
            f"(differs in: {', '.join(diff)}); use another name, or load_if_exists=True "
            f"(CLI: --load-if-exists) to continue the stored one"
        )
    if diff:
        log.warning("study %r exists; loading its stored spec (differs in %s)", name, ", ".join(diff))
    study = Study(name, store, existing)
    study.enqueue_baseline()
    return study


def check_study_name(name: Any) -> str:
    """A study name is 1 to 512 printable characters (PostgreSQL refuses NUL in text)."""
    if not isinstance(name, str) or not name.strip() or len(name) > 512 or not name.isprintable():
        raise ConfigError(
            f"study name must be a non-empty string of at most 512 printable characters (no NUL, "
            f"newline or other control character), got {name!r}"
        )
    return name


def load_study_from_store(name: str, store: StudyStore, *, worker: str = "main") -> Study:
    check_study_name(name)
    spec = store.load_spec(name)
    if spec is None:
        known = store.study_names()
        raise StudyError(f"no study named {name!r} in {store.masked_url}; studies there: {known}")
    return Study(name, store, spec, worker=worker)
