"""The reaper: trials whose worker stopped heartbeating are failed as "worker lost" and retried.

Whichever process notices first (the controller's monitor, or any worker) reaps; releasing a
claim is a conditional update, so two reapers never fail the same trial twice.
"""

from __future__ import annotations

import datetime
import logging

from optuna.trial import TrialState as OptunaState

from paretotune.search import Study, TrialState
from paretotune.workers.retry import store_healthy_for

log = logging.getLogger(__name__)

#: default retries of a config whose worker was lost
MAX_RETRIES = 2


def reap_stale(study: Study, grace_s: float, *, max_retries: int = MAX_RETRIES) -> list[int]:
    """Fail the RUNNING trials of claims idle for ``grace_s`` and re-queue their configs.

    Also fails RUNNING trials older than ``grace_s`` that no active claim holds (a worker
    killed between ask and claiming its trial). Returns the numbers of the trials it failed.
    A process that lost the store itself within the last ``grace_s`` reaps nothing: after an
    outage every heartbeat looks stale, and the workers need one grace period to beat again.
    """
    if store_healthy_for() < grace_s:
        return []
    store = study.store
    reaped: list[int] = []
    for claim in store.stale_claims(study.name, grace_s):
        if not store.take_over_if_stale(claim["id"], claim["heartbeat_at"]):
            continue  # another reaper, or the worker itself, got there first
        number = claim["trial_number"]
        if number is not None and study.fail_lost(
            number, f"worker lost: no heartbeat from {claim['worker']} for {grace_s:g} s", max_retries
        ):
            reaped.append(number)
        elif number is not None and study.trial_state(number) == TrialState.COMPLETE:
            # the worker was slow, not lost: it completed the trial while it was being reaped
            store.finish_claim_forced(claim["id"], completed=True)
            continue
        store.finish_claim(claim["id"], completed=False)  # the slot goes back to the budget
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace_s)
    for number in _unclaimed_running(study, cutoff):
        if study.fail_lost(number, "worker lost: its trial was never claimed", max_retries):
            reaped.append(number)
    return reaped


def _unclaimed_running(study: Study, asked_before: datetime.datetime) -> list[int]:
    """The RUNNING trials asked before ``asked_before`` that no active claim holds."""
    held = study.store.active_trial_numbers(study.name)
    return [ft.number for ft in study.optuna_study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,))
            if ft.number not in held and ft.datetime_start is not None and ft.datetime_start <= asked_before]


#: why `settle_unclaimed` fails a trial
UNCLAIMED_REASON = "abandoned: asked but never claimed, and the study finished without it"


def settle_unclaimed(study: Study) -> list[int]:
    """Once ``study`` is finished (its budget filled, or it is stopped) and no claim is active,
    FAIL every RUNNING trial, without a retry; returns their numbers.

    No claim holds such a trial: an ask created it and its worker lost it before binding a
    claim (the store failed mid-ask and the ask was retried, or the worker was killed). While
    the study runs, `reap_stale` fails it after the grace period; a study that fills its budget
    first would otherwise keep it RUNNING for good. Only trials asked before the check are
    touched, so a claim taken afterwards (a raised budget) keeps its trial.
    """
    cutoff = datetime.datetime.now()
    if study.store.claim_counts(study.name)["active"]:
        return []
    settled = [n for n in _unclaimed_running(study, cutoff) if study.tell_failure_by_number(n, UNCLAIMED_REASON)]
    if settled:
        log.warning("study %r: trial(s) %s were asked but never claimed; failed them (the study is finished)",
                    study.name, ", ".join(map(str, settled)))
    return settled
