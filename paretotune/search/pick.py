"""The selection language of the CLI (`--pick`): a rule string becomes `Front.pick` arguments.

``"max throughput where accuracy_drop<=0.01, latency_p99_ms<=5"``, ``"min latency_p50_ms"``
or ``"knee"``; `select_trial` applies one to a study's front, or takes a trial number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from paretotune.errors import ConfigError
from paretotune.search.objectives import METRICS, OPERATORS, known_metrics
from paretotune.search.trial import TrialState

if TYPE_CHECKING:
    from paretotune.search.study import Study
    from paretotune.search.trial import Trial

_RULE_RE = re.compile(r"^(?P<dir>max|min)\s+(?P<metric>[A-Za-z_][A-Za-z0-9_]*)(?:\s+where\s+(?P<where>.+))?$", re.I)
_CLAUSE_RE = re.compile(r"^(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=)\s*(?P<bound>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)$")
RULE_SYNTAX = "'max METRIC [where METRIC<=NUMBER[, METRIC>=NUMBER]...]', 'min METRIC [where ...]' or 'knee'"


def parse_pick(rule: str, extra_metrics: Sequence[str] = ()) -> dict[str, Any]:
    """Parse the CLI's selection language into `Front.pick` keyword arguments.

    ``"max throughput where accuracy_drop<=0.01, latency_p99_ms<=5"`` gives
    ``{"max": "throughput", "where": {"accuracy_drop": ("<=", 0.01), ...}}``; ``"knee"``
    gives ``{"rule": "knee"}``. Bounds are inclusive (``<=``, ``>=``), as everywhere.
    """
    if not isinstance(rule, str) or not rule.strip():
        raise ConfigError(f"pick: expected {RULE_SYNTAX}, got {rule!r}")
    text = " ".join(rule.split())
    if text.lower() == "knee":
        return {"rule": "knee"}
    match = _RULE_RE.match(text)
    if match is None:
        raise ConfigError(f"pick: expected {RULE_SYNTAX}, got {rule!r}")
    metric = match["metric"]
    _check_metric(f"pick {match['dir'].lower()}", metric, extra_metrics)
    where: dict[str, tuple[str, float]] = {}
    if match["where"] is not None:
        for raw in re.split(r",|\s+and\s+", match["where"], flags=re.I):
            clause = raw.strip()
            found = _CLAUSE_RE.match(clause)
            if found is None:
                raise ConfigError(
                    f"pick: where-clause {clause!r} must look like METRIC<=NUMBER or "
                    f"METRIC>=NUMBER (allowed operators: {list(OPERATORS)}; bounds are inclusive)"
                )
            name = found["metric"]
            _check_metric("pick where", name, extra_metrics)
            if name in where:
                raise ConfigError(f"pick: where names {name!r} twice; give one bound per metric")
            bound = float(found["bound"])
            where[name] = (found["op"], bound)
    out: dict[str, Any] = {match["dir"].lower(): metric}
    if where:
        out["where"] = where
    return out


def _check_metric(field: str, name: str, extra: Sequence[str]) -> None:
    if name not in METRICS and name not in extra:
        raise ConfigError(f"{field}: unknown metric {name!r}; known metrics: {known_metrics(extra)}")


def select_trial(study: Study, *, pick: str | None = None, trial: int | None = None) -> Trial:
    """The trial a CLI invocation names: a selection rule on the front, or a trial number."""
    if (pick is None) == (trial is None):
        raise ConfigError("export: give exactly one of --pick RULE or --trial N")
    if trial is not None:
        return trial_by_number(study, trial)
    kwargs = parse_pick(pick or "", list(study.spec.get("extra_metrics") or []))
    return study.pareto_front().pick(**kwargs)


def trial_by_number(study: Study, number: int) -> Trial:
    """A trial of `study` by number, with the completed ones listed when there is none."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise ConfigError(f"trial must be a trial number (int) or a Trial, got {number!r}")
    trials = {t.number: t for t in study.trials}
    found = trials.get(number)
    if found is None:
        done = sorted(n for n, t in trials.items() if t.state == TrialState.COMPLETE)
        raise ConfigError(
            f"trial: study {study.name!r} has no trial {number}; completed trials: {done}"
        )
    return found
