"""`create_study` and `load_study`: the entry points of the Python API."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from paretotune.errors import ConfigError
from paretotune.search import Study, StudySpec, create_study_from_spec, load_study_from_store
from paretotune.search.samplers import DEFAULT_SAMPLER
from paretotune.search.spec import default_baseline_rule
from paretotune.search.studies import check_study_name
from paretotune.space import Scenario, SearchSpace, SingleStream, scenario_from_dict
from paretotune.storage import StudyStore

log = logging.getLogger(__name__)


def _resolve_space(space: Any, task: Any, scenario: Any = None) -> SearchSpace:
    """None or "standard" (optionally ``{"standard": {options}}``): the task's standard
    space; a mapping: a space in its dict form."""
    if space is None or space == "standard" or (isinstance(space, Mapping) and set(space) == {"standard"}):
        if task is None or not hasattr(task, "layers"):
            raise ConfigError(
                "space: the standard space needs a pt.Task (with layers); give `space` explicitly "
                "for any other evaluator"
            )
        options = dict(space["standard"] or {}) if isinstance(space, Mapping) else {}
        if scenario is not None:
            options.setdefault("scenario", scenario)
        try:
            return SearchSpace.standard(task, **options)
        except TypeError as exc:
            raise ConfigError(f"space.standard: bad option ({exc})") from None
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, Mapping):
        return SearchSpace.from_dict(space)
    raise ConfigError(f"space must be a SearchSpace, a mapping, or 'standard', got {space!r}")


def create_study(
    name: str,
    storage: str | None = None,
    *,
    space: SearchSpace | Mapping[str, Any] | str | None = None,
    objectives: Mapping[str, str] | Sequence[str],
    constraints: Mapping[str, Any] | None = None,
    sampler: str | Mapping[str, Any] = DEFAULT_SAMPLER,
    seed: int | None = None,
    task: Any = None,
    extra_metrics: Sequence[str] = (),
    trial_timeout_s: float | None = None,
    max_failures: int | None = None,
    worker_grace_s: float | None = None,
    duplicates: str | None = None,
    warm_start: str | None = None,
    accuracy_range: Sequence[float] | None = None,
    scenario: Scenario | Mapping[str, Any] | None = None,
    resolution: Mapping[str, float] | None = None,
    baseline: str | None = None,
    load_if_exists: bool = False,
) -> Study:
    """Create a study in ``storage`` (None: ``sqlite:///paretotune.db``).

    ``task`` is a ``pt.Task`` or an import path (``"examples.digits:task"``); with a task and
    no ``space``, the space is ``SearchSpace.standard(task)``. An import path is stored with
    the study, so ``paretotune worker`` can join it knowing only the storage URL and the name.
    ``duplicates``: "reuse" (default) answers a sampler's proposal of an already measured
    config with that measurement (trial state DUPLICATE, not counted against ``n_trials``);
    "measure" evaluates it again. ``warm_start``: "corners" (default) queues, after the
    baseline, one config per engine x bit width with every layer at that precision (the
    textbook recipes); "cover" queues them, then a seeded covering design in which every value
    of every dimension appears (`paretotune.search.start`); "none" leaves the start to the
    sampler. ``accuracy_range``: the values a valid `accuracy` lies in (default: the task's
    ``accuracy_range``, else [0, 1]); a trial reporting one outside it is FAIL. ``scenario``:
    how trials are timed: ``pt.SingleStream()`` (default: a closed loop of batches),
    ``pt.Server(p99_ms=25)`` (the highest QPS whose p99 meets the bound, by MLPerf LoadGen,
    with the dynamic batcher's settings searched) or ``pt.Offline()``; a dict such as ``{"kind": "server", "p99_ms": 25}``.
    ``resolution``: metric -> the smallest difference the Pareto front counts (default accuracy
    1e-6, so floating-point noise never keeps a dominated trial on the front; 0 compares exactly).
    ``baseline``: where trial 0 (the baseline) puts a numeric dimension that declares no
    ``default``: "low", its lower bound (a model's knobs, where the lower bound means nothing
    applied: the default with a ``pt.Task`` or with `accuracy_drop` / `speedup` among the
    objectives and constraints), or "centre", the middle of its range (the default otherwise:
    a black-box function's parameters, where a corner would be an extreme point the sampler
    is drawn to). Declared defaults win under both; a categorical one takes its first choice.
    Left out, an existing study of that name keeps the rule it was created with.
    """
    given = {k: v for k, v in locals().items() if k in StudySpec.FIELDS}  # the study's fields, once
    chosen = scenario_from_dict(scenario)
    if not isinstance(chosen, SingleStream):
        from paretotune.evaluators.serving import require_loadgen

        require_loadgen(chosen)  # refused now, with the install line, not in every trial
    from paretotune.evaluators.task import resolve_task  # loads the task's own imports late

    task_obj, task_path = resolve_task(task, validate=True)
    if accuracy_range is None:
        declared = getattr(task_obj, "accuracy_range", None)
        if declared is not None and tuple(declared) != (0.0, 1.0):
            accuracy_range = tuple(declared)
    space = _resolve_space(space, task_obj, chosen)
    if isinstance(space, SearchSpace) and task_obj is not None and hasattr(task_obj, "layers"):
        from paretotune.evaluators.config import check_space_keys

        check_space_keys(list(space.dimensions))  # a pt.Task's evaluator takes only its own keys
        if not space.is_bound:
            space = space.bind(task_obj.layers)
    fields = {**given, "space": space, "task": task_path, "accuracy_range": accuracy_range, "scenario": chosen}
    spec = StudySpec(**fields)
    store = StudyStore(storage)
    if baseline is None:
        stored = store.load_spec(check_study_name(name))
        if stored is not None:  # an existing study keeps the rule it was created with
            baseline = stored.get("baseline") or "low"
        else:  # hasattr(layers): a pt.Task, not a callable(config) -> metrics
            baseline = default_baseline_rule(spec, over_model=hasattr(task_obj, "layers"))
    if baseline != spec.baseline:
        spec = StudySpec(**{**fields, "baseline": baseline})
    study = create_study_from_spec(name, store, spec, load_if_exists=load_if_exists)
    study.task = task_obj
    return study


def load_study(name: str, storage: str | None = None) -> Study:
    """Reopen a study from its store; the stored spec says everything else."""
    return load_study_from_store(name, StudyStore(storage, create=False))


def submit(
    study: Study | str | os.PathLike[str],
    storage: str | None = None,
    *,
    priority: int = 1,
    n_trials: int | None = None,
    gpu: bool = False,
    tags: Sequence[str] = (),
    resources_per_trial: Mapping[str, Any] | None = None,
    load_if_exists: bool = False,
) -> Study:
    """Open a study to the fleet and return at once: every ``paretotune worker`` of its store
    without ``--study`` then takes its trials, by priority and fair share.

    ``study``: a ``Study`` (``n_trials`` required unless it has a stored budget), or the path of
    a YAML spec (created or updated like ``paretotune run`` does; its ``budget.n_trials`` is
    the default). ``gpu`` and ``tags``: what a worker must have, besides the engines the space
    names; ``resources_per_trial``: what a Ray fleet places each trial with. Submitting again updates the priority and the budget, and reopens a cancelled study.
    """
    from paretotune.workers.fleet import check_priority
    from paretotune.workers.fleet import submit as open_to_fleet

    check_priority(priority)
    if isinstance(study, Study):
        chosen, budget = study, n_trials if n_trials is not None else study.store.target(study.name)
    else:
        from paretotune.spec import load_spec_file

        spec = load_spec_file(os.fspath(study))
        chosen = create_study(spec.name, storage or spec.storage, load_if_exists=load_if_exists, **spec.study_args)
        budget = spec.n_trials if n_trials is None else n_trials
    if budget is None:
        raise ConfigError(f"n_trials: study {chosen.name!r} has no stored budget; give n_trials (an integer >= 1)")
    requires = open_to_fleet(chosen, priority=priority, n_trials=budget, gpu=gpu, tags=tags,
                             resources_per_trial=resources_per_trial)
    log.info("submitted %r (priority %d, budget %d, needs %s)", chosen.name, priority, budget, requires)
    return chosen
