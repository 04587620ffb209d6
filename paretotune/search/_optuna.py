"""The one place that reaches into Optuna's private API: trial records by number, and the
front and hypervolume helpers Optuna keeps private. Everything else talks to ``optuna.Study``'s
public methods; an Optuna upgrade that moves these names breaks only this module."""

from __future__ import annotations

from typing import Any

import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.exceptions import UpdateFinishedTrialError
from optuna.study._multi_objective import _is_pareto_front as is_pareto_front
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

__all__ = ["compute_hypervolume", "fail_running", "frozen_trial", "frozen_trial_of", "is_pareto_front",
           "mark_if_running", "queued_params"]


def _trial_id(ostudy: optuna.Study, number: int) -> int:
    return int(ostudy._storage.get_trial_id_from_study_id_trial_number(ostudy._study_id, number))


def queued_params(ostudy: optuna.Study) -> list[dict[str, Any]]:
    """The params of the enqueued trials that have not run yet (Optuna keeps a WAITING trial's
    params in its ``fixed_params`` system attribute until it is asked)."""
    return [dict(ft.system_attrs.get("fixed_params") or {})
            for ft in ostudy.get_trials(deepcopy=False, states=(OptunaState.WAITING,))]


def frozen_trial(ostudy: optuna.Study, number: int) -> FrozenTrial:
    """The stored record of trial ``number``, read afresh from the storage."""
    return ostudy._storage.get_trial(_trial_id(ostudy, number))


def frozen_trial_of(ostudy: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """The stored record of an asked trial, read afresh (another process may have finished it)."""
    return ostudy._storage.get_trial(trial._trial_id)


def fail_running(ostudy: optuna.Study, number: int, reason: str) -> bool:
    """FAIL a RUNNING trial by number with ``fail_reason``; False when it had finished."""
    storage, trial_id = ostudy._storage, _trial_id(ostudy, number)
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial_id, OptunaState.FAIL)
    except UpdateFinishedTrialError:
        return False
    return True


def mark_if_running(ostudy: optuna.Study, number: int, key: str, value: Any) -> FrozenTrial | None:
    """Set a user attribute on trial ``number`` while it runs; its record, or None when it
    had finished (Optuna refuses writes to a finished trial, so two reapers can't both win)."""
    trial_id = _trial_id(ostudy, number)
    frozen = ostudy._storage.get_trial(trial_id)
    if frozen.state != OptunaState.RUNNING:
        return None
    try:
        ostudy._storage.set_trial_user_attr(trial_id, key, value)
    except UpdateFinishedTrialError:
        return None
    return frozen
