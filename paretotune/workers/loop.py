"""The trial loop every worker runs: claim a budget slot, ask, evaluate, tell.

The same loop serves the local pool, `paretotune worker` started by hand, and the in-process
single worker. It needs nothing but a storage URL and a study name: the spec in the store says
the rest. Every store call rides out outages (``retry``); a measurement that cannot be
delivered is spooled to disk before the worker gives up, and delivered by the next worker.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paretotune.evaluators.devices import telemetry
from paretotune.search import Study, Trial, TrialState, load_study_from_store
from paretotune.space import Config
from paretotune.storage import StudyStore
from paretotune.workers.executor import TrialExecutor
from paretotune.workers.lifecycle import (
    IDLE_POLL_S,
    Claimed,
    Heartbeat,
    budget_left,
    claim_trial,
    deliver_spool,
    finish,
    heartbeat_interval,
    release,
    tell,
    worker_id,
)
from paretotune.workers.reaper import reap_stale
from paretotune.workers.retry import DEFAULT_RETRY_WINDOW_S, retry

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    completed: int = 0
    failed: int = 0
    invalid: int = 0


class Interrupted(KeyboardInterrupt):
    """A worker stopped by a signal other than SIGINT (the pool's SIGTERM on Ctrl-C)."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


def _hold_signals() -> set[int | signal.Signals]:
    """Block SIGINT and SIGTERM (they stay pending); returns the mask to restore."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def raise_on_sigterm() -> None:
    """In a worker process: SIGTERM unwinds like Ctrl-C, so the running trial is recorded."""

    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)


def _fail_interrupted(study: Study, number: int, signame: str) -> None:
    """Record the trial a signal interrupted as FAIL on the way out, so nothing stays RUNNING
    (one try: the user is waiting for the process to end)."""
    try:
        study.tell_failure_by_number(number, f"interrupted ({signame})")
    except Exception as exc:  # already finished, or the store is gone: the reaper settles it
        log.debug("could not record trial %d as interrupted: %s", number, exc)


def _count(stats: WorkerStats, trial: Trial) -> None:
    if trial.state == TrialState.INVALID:
        stats.invalid += 1
    elif trial.state == TrialState.COMPLETE:
        stats.completed += 1
    else:
        stats.failed += 1


def run_worker(
    storage: str | StudyStore,
    study_name: str,
    evaluator: Callable[[Config], Any],
    *,
    n_trials: int,
    worker: str | None = None,
    trial_timeout_s: float | None = None,
    stop: threading.Event | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    retry_window_s: float = DEFAULT_RETRY_WINDOW_S,
    seed_stream: str | None = None,
) -> WorkerStats:
    """Work on the study until it holds ``n_trials`` completed trials, it is stopped, or
    ``stop`` is set. Returns what this worker did. ``seed_stream``: the name this worker's
    sampler seed derives from (default: its worker id, unique per process); the local pool
    names its workers' streams ``local-0``, ``local-1``, ..., so that a seeded study run by one
    worker proposes the same configs every time."""
    worker = worker or worker_id()
    w = retry_window_s
    store = storage if isinstance(storage, StudyStore) else retry(StudyStore, storage, what="connect", window_s=w)
    study = retry(load_study_from_store, study_name, store, worker=seed_stream or worker, what="load study",
                  window_s=w)
    timeout = trial_timeout_s if trial_timeout_s is not None else study.trial_timeout_s
    grace = study.worker_grace_s

    def reap_now() -> None:
        retry(reap_stale, study, grace, what="reap", window_s=w)

    study.on_wait = reap_now
    stats = WorkerStats()
    deliver_spool(study, w)
    heartbeat = Heartbeat(store, heartbeat_interval(grace))
    executor = TrialExecutor(evaluator, timeout_s=timeout)
    try:
        while stop is None or not stop.is_set():
            # The baseline runs first: while another worker runs it, wait (reaping, so a
            # baseline held by a dead worker is queued again and this worker takes it).
            if not retry(study.baseline_gate, what="status", window_s=w):
                reap_now()
                time.sleep(IDLE_POLL_S)
                continue
            study.last_asked = None
            try:
                claimed: Claimed | None = claim_trial(study, worker, n_trials, w, heartbeat)
            except KeyboardInterrupt as exc:  # between the ask and the bind
                if study.last_asked is not None:
                    _fail_interrupted(study, study.last_asked, getattr(exc, "signame", "SIGINT"))
                raise
            if claimed is None:
                if not budget_left(study, n_trials, w):
                    break
                # A running trial may still fail and free its slot, or its worker may be dead:
                # whichever process notices first reaps it.
                reap_now()
                time.sleep(IDLE_POLL_S)
                continue
            trial: Trial | None = None
            stop_now = False
            masked: set[int | signal.Signals] | None = None
            try:
                with telemetry() as gpu:  # {} without an NVIDIA driver
                    outcome = executor.run(claimed.pending.config)
                trial = tell(study, claimed.pending, outcome.with_extras(gpu, {"worker": worker}), w)
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM from the pool (Interrupted)
                # a second signal (the pool's SIGTERM) must not cut this record short: hold
                # them until the claim is settled below
                masked = _hold_signals()
                if trial is None:
                    _fail_interrupted(study, claimed.pending.number, getattr(exc, "signame", "SIGINT"))
                raise
            finally:
                heartbeat.release(claimed.claim)
                try:
                    if trial is None:
                        release(study, claimed.claim)
                    else:
                        stop_now = finish(study, claimed.claim, trial, n_trials, w)
                except Exception as exc:  # the reaper will release it
                    log.warning("could not finish claim %d: %s", claimed.claim, exc)
                finally:
                    if masked is not None:
                        signal.pthread_sigmask(signal.SIG_SETMASK, masked)
            if trial is not None:
                _count(stats, trial)
                if on_trial is not None:
                    on_trial(trial)
            if stop_now:
                break
    finally:
        executor.close()
        heartbeat.close()
    return stats
