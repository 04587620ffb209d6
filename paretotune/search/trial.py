"""Trials as users see them: a state, a config, metrics and, if it did not complete, why.

Optuna keeps the record (`FrozenTrial`, its states and user attributes); `trial_from_optuna`
reads that record into our `Trial`, so the mapping between Optuna's states and ours lives in
one place.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState as OptunaState

from paretotune.errors import ConfigError, InvalidConfigError
from paretotune.space import Config, SearchSpace


class TrialState(str, enum.Enum):
    COMPLETE = "COMPLETE"
    FAIL = "FAIL"
    INVALID = "INVALID"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    #: the sampler proposed a config already measured: answered with that measurement, not
    #: evaluated again, and not counted against n_trials (`Trial.duplicate_of` names it)
    DUPLICATE = "DUPLICATE"


@dataclass(frozen=True)
class Trial:
    """One trial as users see it: number, state, config, metrics and, if it failed, why."""

    number: int
    state: TrialState
    config: Config | None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    feasible: bool | None = None
    is_baseline: bool = False
    duration_s: float | None = None
    duplicate_of: int | None = None
    #: metric -> (low, high): the measurement's 95% interval of that metric (timings, from the
    #: harness's bootstrap; `speedup` from its per-block ratios); empty when it gave none
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state.value,
            "config": None if self.config is None else self.config.to_dict(),
            "metrics": dict(self.metrics),
            "reason": self.reason,
            "feasible": self.feasible,
            "is_baseline": self.is_baseline,
            "duration_s": self.duration_s,
            "duplicate_of": self.duplicate_of,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
        }


@dataclass
class PendingTrial:
    """A trial handed out by ``Study.ask`` and not yet told."""

    number: int
    config: Config
    is_baseline: bool
    _optuna_trial: optuna.trial.Trial


def trial_from_optuna(
    ft: optuna.trial.FrozenTrial, space: SearchSpace, is_feasible: Callable[[Mapping[str, float]], bool]
) -> Trial:
    """Our `Trial` from Optuna's record: PRUNED is INVALID, a COMPLETE answered from an
    earlier measurement is DUPLICATE; `is_feasible` judges the metrics of a COMPLETE one."""
    attrs = ft.user_attrs
    config: Config | None = None
    if ft.params:
        try:
            config = space.from_params(ft.params, allow_forbidden=ft.state == OptunaState.PRUNED)
        except (ConfigError, InvalidConfigError):
            config = None  # a half-made trial (interrupted ask)
    metrics = dict(attrs.get("metrics") or {})
    duplicate_of = attrs.get("duplicate_of")
    if ft.state == OptunaState.COMPLETE and duplicate_of is not None:
        state, reason = TrialState.DUPLICATE, f"already measured as trial {duplicate_of}"
    elif ft.state == OptunaState.COMPLETE:
        state, reason = TrialState.COMPLETE, None
    elif ft.state == OptunaState.PRUNED:
        state, reason = TrialState.INVALID, attrs.get("invalid_reason", "pruned")
    elif ft.state == OptunaState.FAIL:
        state, reason = TrialState.FAIL, attrs.get("fail_reason", "failed (no reason recorded)")
    elif ft.state == OptunaState.RUNNING:
        state, reason = TrialState.RUNNING, None
    else:
        state, reason = TrialState.WAITING, None
    duration = (
        (ft.datetime_complete - ft.datetime_start).total_seconds()
        if ft.datetime_complete and ft.datetime_start
        else None
    )
    return Trial(
        number=ft.number,
        state=state,
        config=config,
        metrics=metrics,
        reason=reason,
        feasible=is_feasible(metrics) if state == TrialState.COMPLETE else None,
        is_baseline=bool(attrs.get("baseline")),
        duration_s=duration,
        duplicate_of=duplicate_of,
        intervals=intervals_of({f"{k}_ci": v for k, v in (attrs.get("intervals") or {}).items()}, metrics),
    )


def intervals_of(details: Mapping[str, Any], metrics: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """The ``<metric>_ci`` entries of a measurement's details, as metric -> (low, high), for the
    metrics it measured; a malformed entry is left out (no interval, not a made-up one)."""
    out: dict[str, tuple[float, float]] = {}
    for key, value in details.items():
        if not key.endswith("_ci") or key[:-3] not in metrics:
            continue
        if (
            isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and value[0] <= value[1]
        ):
            out[key[:-3]] = (float(value[0]), float(value[1]))
    return out
