"""Study specs: validating the pieces of a study, and creating or reopening it from its spec.

The spec is what `create_study` takes, as JSON, stored with the study in the store, so any
process (a worker started by hand, `pt.load_study`) rebuilds the same `Study` from the store
URL and the study name. `paretotune.spec` is the YAML side (a file the CLI runs).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from paretotune.errors import ConfigError, InvalidConfigError, StudyError
from paretotune.search.objectives import (
    check_scenario_metrics,
    parse_accuracy_range,
    parse_constraints,
    parse_objectives,
)
from paretotune.search.proposals import DUPLICATE_POLICIES, WARM_STARTS
from paretotune.search.samplers import DEFAULT_SAMPLER, sampler_names
from paretotune.search.study import Study
from paretotune.space import Scenario, SearchSpace, SingleStream, scenario_from_dict
from paretotune.storage import StudyStore

log = logging.getLogger(__name__)

SPEC_VERSION = 1


def build_spec(
    *,
    space: SearchSpace,
    objectives: Any,
    constraints: Any = None,
    sampler: str | Mapping[str, Any] = DEFAULT_SAMPLER,
    seed: int | None = None,
    task: str | None = None,
    extra_metrics: Sequence[str] = (),
    trial_timeout_s: float | None = None,
    max_failures: int | None = None,
    worker_grace_s: float | None = None,
    duplicates: str | None = None,
    warm_start: str | None = None,
    accuracy_range: Sequence[float] | None = None,
    scenario: Scenario | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate the pieces of a study and return the spec stored with it (JSON-able)."""
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space must be a paretotune.SearchSpace, got {type(space).__name__}")
    if not space.is_bound:
        raise ConfigError(
            "space: a PerLayer dimension has layers='auto' but no task to take the layers from; "
            "pass task=... or bind the space with space.bind(layers)"
        )
    try:
        space.baseline()
    except InvalidConfigError as exc:
        raise ConfigError(
            f"space: the baseline (every dimension at its default) is forbidden ({exc}); change a "
            "default or the `forbidden` rules, since every study measures the baseline first"
        ) from None
    if isinstance(extra_metrics, (str, bytes)) or not isinstance(extra_metrics, (list, tuple)) or not all(
        isinstance(m, str) and m for m in extra_metrics
    ):
        raise ConfigError(f"extra_metrics must be a list of metric names (strings), got {extra_metrics!r}")
    extra = list(extra_metrics)
    acc_range = parse_accuracy_range(accuracy_range)
    objs = parse_objectives(objectives, extra)
    cons = parse_constraints(constraints, extra)
    chosen = scenario_from_dict(scenario)
    check_scenario_metrics(chosen.kind, [*objs, *(c.metric for c in cons)])
    name = sampler.get("name") if isinstance(sampler, Mapping) else sampler
    if name not in sampler_names():
        raise ConfigError(f"sampler: unknown name {name!r}; valid samplers: {sampler_names()}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be an integer or None, got {seed!r}")
    if trial_timeout_s is not None and not (isinstance(trial_timeout_s, (int, float)) and trial_timeout_s > 0):
        raise ConfigError(f"trial_timeout_s must be a positive number of seconds, got {trial_timeout_s!r}")
    if max_failures is not None and not (isinstance(max_failures, int) and max_failures >= 1):
        raise ConfigError(f"max_failures must be an integer >= 1, got {max_failures!r}")
    if worker_grace_s is not None and not (
        isinstance(worker_grace_s, (int, float)) and not isinstance(worker_grace_s, bool) and worker_grace_s >= 1
    ):
        raise ConfigError(f"worker_grace_s must be a number of seconds >= 1, got {worker_grace_s!r}")
    if duplicates is not None and duplicates not in DUPLICATE_POLICIES:
        raise ConfigError(f"duplicates must be one of {list(DUPLICATE_POLICIES)}, got {duplicates!r}")
    if warm_start is not None and warm_start not in WARM_STARTS:
        raise ConfigError(f"warm_start must be one of {list(WARM_STARTS)}, got {warm_start!r}")
    return {
        "version": SPEC_VERSION,
        "space": space.to_dict(),
        "objectives": [[name, direction] for name, direction in objs.items()],
        "constraints": {c.metric: [c.op, c.bound] for c in cons},
        "sampler": dict(sampler) if isinstance(sampler, Mapping) else sampler,
        "seed": seed,
        "task": task,
        "extra_metrics": extra,
        "trial_timeout_s": trial_timeout_s,
        "max_failures": max_failures,
        "worker_grace_s": worker_grace_s,
        "duplicates": duplicates,
        "warm_start": warm_start,
        # stored only when it differs from [0, 1], so the specs of older studies still match
        **({"accuracy_range": list(acc_range)} if accuracy_range is not None else {}),
        # stored only for the LoadGen scenarios, so single-stream specs keep their old form
        **({"scenario": chosen.to_dict()} if not isinstance(chosen, SingleStream) else {}),
    }


def _spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if json.dumps(old.get(k), sort_keys=True) != json.dumps(new.get(k), sort_keys=True))


def create_study_from_spec(
    name: str, store: StudyStore, spec: dict[str, Any], *, load_if_exists: bool = False
) -> Study:
    """Create the study (Optuna record, stored spec, queued baseline) or reopen it.

    An existing study with the same spec is reopened. One with a different spec is an error
    unless ``load_if_exists`` asks to load it as it is (its stored spec wins).
    """
    check_study_name(name)
    existing = store.load_spec(name)
    if existing is None:
        objectives = parse_objectives(spec["objectives"], spec.get("extra_metrics") or [])
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
