"""`StudySpec`: everything a study is, validated once.

`create_study` builds one from its arguments, the YAML loader (`paretotune.spec`) from a spec
file's keys (the same names: `StudySpec.FIELDS`), and the store keeps its JSON form
(`to_dict`), from which any process (a worker started by hand, `pt.load_study`) rebuilds the
same `Study` (`Study.__init__` reads it with `from_dict`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.search.objectives import (
    check_scenario_metrics,
    parse_accuracy_range,
    parse_constraints,
    parse_objectives,
)
from paretotune.search.pareto import parse_resolution
from paretotune.search.proposals import DUPLICATE_POLICIES, WARM_STARTS
from paretotune.search.relative import RELATIVE_METRICS
from paretotune.search.samplers import DEFAULT_SAMPLER, sampler_names
from paretotune.space import Scenario, SearchSpace, SingleStream, scenario_from_dict
from paretotune.space.dimensions import BASELINE_RULES

log = logging.getLogger(__name__)

SPEC_VERSION = 1


@dataclass(frozen=True)
class StudySpec:
    """A study's definition, checked in ``__post_init__`` (field, value and what is allowed).

    The inputs take the forms `create_study` documents (objectives as a mapping or a list,
    constraints as ``{metric: (op, bound)}``, a scenario object or dict); the fields hold them
    parsed: ``objectives`` a dict in order, ``constraints`` Constraint objects, ``scenario`` a
    Scenario, ``accuracy_range`` a pair (None: the default [0, 1], not stored).
    """

    space: SearchSpace
    objectives: Any
    constraints: Any = None
    sampler: str | Mapping[str, Any] = DEFAULT_SAMPLER
    seed: int | None = None
    task: str | None = None
    extra_metrics: Sequence[str] = ()
    trial_timeout_s: float | None = None
    max_failures: int | None = None
    worker_grace_s: float | None = None
    duplicates: str | None = None
    warm_start: str | None = None
    accuracy_range: Sequence[float] | None = None
    scenario: Scenario | Mapping[str, Any] | None = None
    #: metric -> the smallest difference the front counts (`pareto.DEFAULT_RESOLUTION` added to)
    resolution: Mapping[str, float] | None = None
    #: where the baseline puts a dimension that declares no default (`BASELINE_RULES`; None:
    #: "low", what every study stored before this field existed was created with)
    baseline: str | None = None

    #: the field names: `create_study`'s study arguments and a YAML spec's study keys
    FIELDS: ClassVar[tuple[str, ...]]

    def __post_init__(self) -> None:
        space = self.space
        if not isinstance(space, SearchSpace):
            raise ConfigError(f"space must be a paretotune.SearchSpace, got {type(space).__name__}")
        if not space.is_bound:
            raise ConfigError(
                "space: a PerLayer dimension has layers='auto' but no task to take the layers from; "
                "pass task=... or bind the space with space.bind(layers)"
            )
        if self.baseline is not None and self.baseline not in BASELINE_RULES:
            raise ConfigError(f"baseline must be one of {list(BASELINE_RULES)}, got {self.baseline!r}")
        rule = self.baseline or BASELINE_RULES[0]
        object.__setattr__(self, "baseline", rule)
        try:
            space.baseline(rule)
        except InvalidConfigError as exc:
            raise ConfigError(
                f"space: the baseline (every dimension at its default) is forbidden ({exc}); change a "
                "default or the `forbidden` rules, since every study measures the baseline first"
            ) from None
        extra_metrics = self.extra_metrics
        if isinstance(extra_metrics, (str, bytes)) or not isinstance(extra_metrics, (list, tuple)) or not all(
            isinstance(m, str) and m for m in extra_metrics
        ):
            raise ConfigError(f"extra_metrics must be a list of metric names (strings), got {extra_metrics!r}")
        extra = tuple(extra_metrics)
        acc_range = None if self.accuracy_range is None else parse_accuracy_range(self.accuracy_range)
        objs = parse_objectives(self.objectives, extra)
        constraints = self.constraints
        if isinstance(constraints, Mapping):  # the stored form holds [op, bound] lists
            constraints = {k: tuple(v) if isinstance(v, list) else v for k, v in constraints.items()}
        cons = tuple(parse_constraints(constraints, extra))
        chosen = scenario_from_dict(self.scenario)
        check_scenario_metrics(chosen.kind, [*objs, *(c.metric for c in cons)])
        sampler, seed = self.sampler, self.seed
        name = sampler.get("name") if isinstance(sampler, Mapping) else sampler
        if name not in sampler_names():
            raise ConfigError(f"sampler: unknown name {name!r}; valid samplers: {sampler_names()}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed must be an integer or None, got {seed!r}")
        timeout, failures, grace = self.trial_timeout_s, self.max_failures, self.worker_grace_s
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ConfigError(f"trial_timeout_s must be a positive number of seconds, got {timeout!r}")
        if failures is not None and not (isinstance(failures, int) and failures >= 1):
            raise ConfigError(f"max_failures must be an integer >= 1, got {failures!r}")
        if grace is not None and not (isinstance(grace, (int, float)) and not isinstance(grace, bool) and grace >= 1):
            raise ConfigError(f"worker_grace_s must be a number of seconds >= 1, got {grace!r}")
        if self.duplicates is not None and self.duplicates not in DUPLICATE_POLICIES:
            raise ConfigError(f"duplicates must be one of {list(DUPLICATE_POLICIES)}, got {self.duplicates!r}")
        if self.warm_start is not None and self.warm_start not in WARM_STARTS:
            raise ConfigError(f"warm_start must be one of {list(WARM_STARTS)}, got {self.warm_start!r}")
        if self.resolution is not None:
            parse_resolution(self.resolution)  # refused here, naming the metric and the value
            object.__setattr__(self, "resolution", {k: float(v) for k, v in self.resolution.items()})
        if self.task is not None and not isinstance(self.task, str):
            raise ConfigError(f"task (stored) must be an import path or None, got {self.task!r}")
        for field_name, value in (("extra_metrics", extra), ("objectives", objs), ("constraints", cons),
                                  ("scenario", chosen), ("accuracy_range", acc_range),
                                  ("sampler", dict(sampler) if isinstance(sampler, Mapping) else sampler)):
            object.__setattr__(self, field_name, value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored with the study (older studies' specs keep matching it)."""
        scenario: Scenario = self.scenario  # type: ignore[assignment]  # parsed in __post_init__
        return {
            "version": SPEC_VERSION,
            "space": self.space.to_dict(),
            "objectives": [[name, direction] for name, direction in self.objectives.items()],
            "constraints": {c.metric: [c.op, c.bound] for c in self.constraints},
            "sampler": self.sampler,
            "seed": self.seed,
            "task": self.task,
            "extra_metrics": list(self.extra_metrics),
            "trial_timeout_s": self.trial_timeout_s,
            "max_failures": self.max_failures,
            "worker_grace_s": self.worker_grace_s,
            "duplicates": self.duplicates,
            "warm_start": self.warm_start,
            # stored only when it differs from [0, 1], so the specs of older studies still match
            **({"accuracy_range": list(self.accuracy_range)} if self.accuracy_range is not None else {}),
            # stored only for the LoadGen scenarios, so single-stream specs keep their old form
            **({"scenario": scenario.to_dict()} if not isinstance(scenario, SingleStream) else {}),
            # stored only when given, so the specs of older studies still match
            **({"resolution": dict(self.resolution)} if self.resolution else {}),
            # stored only when it is not "low", so the specs of older studies still match
            **({"baseline": self.baseline} if self.baseline != BASELINE_RULES[0] else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        """The spec a store holds (`to_dict`'s form, of this version or an older one)."""
        if not isinstance(data, Mapping) or "space" not in data or "objectives" not in data:
            raise ConfigError(f"a stored study spec needs 'space' and 'objectives', got {data!r}")
        version = data.get("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise ConfigError(f"stored spec version {version!r} is not supported; this paretotune reads {SPEC_VERSION}")
        values = {name: data[name] for name in cls.FIELDS if name in data and data[name] is not None}
        values["space"] = SearchSpace.from_dict(data["space"])
        return cls(**values)


StudySpec.FIELDS = tuple(f.name for f in fields(StudySpec))


def default_baseline_rule(spec: StudySpec, *, over_model: bool) -> str:
    """`create_study`'s `baseline` when none is given. The baseline is a reference config ("the
    model as given", undeclared dimensions at their lower bound: nothing applied) in a study
    over a pt.Task, and in one whose objectives or constraints are relative to it
    (`RELATIVE_METRICS`). Otherwise (a black-box function) it is only the first observation
    and the hypervolume's reference, and the centre of each undeclared range serves it
    without pulling the sampler towards a corner."""
    metrics = {*spec.objectives, *(c.metric for c in spec.constraints)}
    if over_model or metrics & set(RELATIVE_METRICS):
        return "low"
    return "centre"
