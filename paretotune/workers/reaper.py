"""The reaper: trials whose worker stopped heartbeating are failed as "worker lost" and retried.

Whichever process notices first (the controller's monitor, or any worker) reaps; releasing a
claim is a conditional update, so two reapers never fail the same trial twice.
"""

from __future__ import annotations

import logging

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState as OptunaState

from paretotune.search import Study

log = logging.getLogger(__name__)

#: default retries of a config whose worker was lost
MAX_RETRIES = 2


def reap_stale(study: Study, grace_s: float, *, max_retries: int = MAX_RETRIES) -> list[int]:
    """Fail the RUNNING trials of claims idle for ``grace_s`` and re-queue their configs.

    Returns the numbers of the trials it failed.
    """
    store = study.store
    reaped: list[int] = []
    for claim in store.stale_claims(study.name, grace_s):
        if not store.release_if_stale(claim["id"], claim["heartbeat_at"]):
            continue  # another reaper, or the worker itself, got there first
        number = claim["trial_number"]
        if number is None:
            continue
        ostudy = study.optuna_study
        storage = ostudy._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(ostudy._study_id, number)
        frozen = storage.get_trial(trial_id)
        if frozen.state != OptunaState.RUNNING:
            if frozen.state == OptunaState.COMPLETE:
                store.finish_claim_forced(claim["id"], completed=True)
            continue
        reason = f"worker lost: no heartbeat from {claim['worker']} for {grace_s:g} s"
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            storage.set_trial_state_values(trial_id, OptunaState.FAIL)
        except UpdateFinishedTrialError:
            continue
        reaped.append(number)
        retries = int(frozen.user_attrs.get("retries", 0))
        if retries < max_retries:
            attrs = {"retries": retries + 1, "retry_of": number}
            if frozen.user_attrs.get("baseline"):
                attrs["baseline"] = True
            ostudy.enqueue_trial(frozen.params, user_attrs=attrs, skip_if_exists=False)
            log.warning("trial %d: %s; re-queued (retry %d)", number, reason, retries + 1)
        else:
            log.warning("trial %d: %s; not retried (max_retries=%d)", number, reason, max_retries)
    return reaped
