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
    held = store.active_trial_numbers(study.name)
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace_s)
    for ft in study.optuna_study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,)):
        if ft.number in held or ft.datetime_start is None or ft.datetime_start > cutoff:
            continue
        if study.fail_lost(ft.number, "worker lost: its trial was never claimed", max_retries):
            reaped.append(ft.number)
    return reaped
