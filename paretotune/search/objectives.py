"""Objectives and constraints over the metric vocabulary (`paretotune.metrics`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from paretotune.errors import ConfigError
from paretotune.metrics import (  # noqa: F401 - the vocabulary, re-exported for search's users
    DEFAULT_ACCURACY_RANGE,
    HELPER_METRICS,
    METRIC_DOMAINS,
    METRICS,
    SCENARIO_METRICS,
)


def parse_accuracy_range(value: Any) -> tuple[float, float]:
    """``[low, high]`` with low < high, both finite (None: the default [0, 1])."""
    if value is None:
        return DEFAULT_ACCURACY_RANGE
    ok = (
        isinstance(value, (list, tuple)) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        and value[0] < value[1]
    )
    if not ok:
        raise ConfigError(f"accuracy_range must be [low, high] with finite numbers low < high, got {value!r}")
    return float(value[0]), float(value[1])


def check_scenario_metrics(kind: str, names: Iterable[str]) -> None:
    """Refuse objectives and constraints the scenario `kind` never measures."""
    for name in names:
        for other, metrics in SCENARIO_METRICS.items():
            if other != kind and name in metrics:
                raise ConfigError(
                    f"objective/constraint {name!r} is measured only under a {other} scenario, and "
                    f"this study's scenario is {kind}; under {kind} the scenario metrics are "
                    f"{list(SCENARIO_METRICS.get(kind, ()))} (give scenario={{kind: {other}, ...}} "
                    "to measure it)"
                )


def out_of_domain(metrics: Mapping[str, float], accuracy_range: tuple[float, float]) -> str | None:
    """The first metric outside its domain, as a FAIL reason, or None."""
    for name, value in metrics.items():
        low, high = accuracy_range if name == "accuracy" else METRIC_DOMAINS.get(name, (-math.inf, math.inf))
        if not low <= value <= high:
            allowed = f">= {low:g}" if high == math.inf else f"within [{low:g}, {high:g}]"
            return f"metric {name!r} is {value:g}, outside its domain (it must be {allowed})"
    return None
DIRECTIONS = {"min": "minimize", "max": "maximize", "minimize": "minimize", "maximize": "maximize"}
OPERATORS = ("<=", ">=")


def known_metrics(extra: Iterable[str] = ()) -> list[str]:
    return [*METRICS, *extra]


def check_metric(field: str, name: Any, extra: Sequence[str] = ()) -> str:
    if name not in METRICS and name not in extra:
        raise ConfigError(
            f"{field}: unknown metric {name!r}; known metrics: {known_metrics(extra)} "
            f"(declare your own with extra_metrics=[...])"
        )
    return str(name)


def parse_objectives(objectives: Any, extra: Sequence[str] = ()) -> dict[str, str]:
    """``{"latency_p50_ms": "min", ...}``, a list of names (natural directions), or a list of
    ``[name, direction]`` pairs (the stored form: JSON objects don't keep their order)."""
    if isinstance(objectives, str) or not isinstance(objectives, (Mapping, list, tuple)):
        raise ConfigError(
            f"objectives must be a mapping of metric to 'min'/'max' or a list of metrics, got {objectives!r}"
        )
    if not objectives:
        raise ConfigError("objectives must name at least one metric")
    if isinstance(objectives, Mapping):
        items = list(objectives.items())
    else:
        items = [
            tuple(o) if isinstance(o, (list, tuple)) and len(o) == 2
            else (o, METRICS[o][0] if isinstance(o, str) and o in METRICS else None)
            for o in objectives
        ]
    out: dict[str, str] = {}
    for name, direction in items:
        if name in out:
            raise ConfigError(f"objectives: {name!r} is listed twice")
        check_metric("objectives", name, extra)
        if direction not in DIRECTIONS:
            raise ConfigError(
                f"objectives.{name}: direction must be 'min' or 'max', got {direction!r}"
            )
        out[name] = "min" if DIRECTIONS[direction] == "minimize" else "max"
    return out


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``, for example ``accuracy_drop <= 0.01``."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 when satisfied, the size of the violation otherwise."""
        return value - self.bound if self.op == "<=" else self.bound - value

    def holds(self, value: float) -> bool:
        return self.violation(value) <= 0

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraints(constraints: Any, extra: Sequence[str] = ()) -> list[Constraint]:
    """``{"accuracy_drop": ("<=", 0.01)}``."""
    if constraints is None:
        return []
    if not isinstance(constraints, Mapping):
        raise ConfigError(
            f"constraints must be a mapping of metric to (op, bound), got {constraints!r}"
        )
    out = []
    for name, rule in constraints.items():
        check_metric("constraints", name, extra)
        if not isinstance(rule, (list, tuple)) or len(rule) != 2:
            raise ConfigError(f"constraints.{name} must be (op, bound) such as ('<=', 0.01), got {rule!r}")
        op, bound = rule
        if op not in OPERATORS:
            raise ConfigError(f"constraints.{name}: operator must be one of {list(OPERATORS)}, got {op!r}")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise ConfigError(f"constraints.{name}: bound must be a finite number, got {bound!r}")
        out.append(Constraint(str(name), op, float(bound)))
    return out
