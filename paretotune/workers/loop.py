"""The trial loop every worker runs: claim a budget slot, ask, evaluate, tell.

The same loop serves the local pool, `paretotune worker` started by hand, and the in-process
single worker. It needs nothing but a storage URL and a study name: the spec in the store says
the rest.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paretotune.errors import StudyError
from paretotune.search import Study, TrialState, load_study_from_store
from paretotune.storage import StudyStore
from paretotune.workers.executor import Outcome, TrialExecutor

log = logging.getLogger(__name__)

#: seconds between heartbeats of a running trial's claim
HEARTBEAT_S = 2.0
#: seconds without a heartbeat after which a running trial's worker is declared lost
GRACE_S = 20.0
#: seconds an idle worker waits before re-checking for a released budget slot
IDLE_POLL_S = 0.2


def worker_id(prefix: str = "w") -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerStats:
    completed: int = 0
    failed: int = 0
    invalid: int = 0


class _Heartbeat:
    """Keeps the active claim's heartbeat fresh from a thread, so a long build stays alive."""

    def __init__(self, store: StudyStore) -> None:
        self._store = store
        self._claim: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paretotune-heartbeat", daemon=True)
        self._thread.start()

    def set(self, claim: int | None) -> None:
        self._claim = claim

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            claim = self._claim
            if claim is None:
                continue
            try:
                self._store.heartbeat([claim])
            except Exception as exc:  # a store hiccup must not kill the heartbeat thread
                log.warning("heartbeat failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def max_failures_for(study: Study, target: int) -> int:
    configured = study.spec.get("max_failures")
    return int(configured) if configured else max(10, target)


def run_worker(
    storage: str | StudyStore,
    study_name: str,
    evaluator: Callable[..., Any],
    *,
    n_trials: int,
    worker: str | None = None,
    trial_timeout_s: float | None = None,
    stop: threading.Event | None = None,
    on_trial: Callable[[Any], None] | None = None,
) -> WorkerStats:
    """Work on the study until it holds ``n_trials`` completed trials, it is stopped, or
    ``stop`` is set. Returns what this worker did."""
    worker = worker or worker_id()
    store = storage if isinstance(storage, StudyStore) else StudyStore(storage)
    study = load_study_from_store(study_name, store, worker=worker)
    timeout = trial_timeout_s if trial_timeout_s is not None else study.trial_timeout_s
    max_failures = max_failures_for(study, n_trials)
    stats = WorkerStats()
    heartbeat = _Heartbeat(store)
    executor = TrialExecutor(evaluator, timeout_s=timeout)
    try:
        while stop is None or not stop.is_set():
            claim = store.claim(study_name, worker, n_trials)
            if claim is None:
                if store.stopped_reason(study_name):
                    break
                counts = store.claim_counts(study_name)
                if counts["done"] >= n_trials or counts["active"] == 0:
                    break
                time.sleep(IDLE_POLL_S)  # a running trial may still fail and free its slot
                continue
            heartbeat.set(claim)
            completed = False
            try:
                pending = study.ask()
                store.bind_claim(claim, pending.number)
                outcome: Outcome = executor.run(pending.config)
                if outcome.invalid is not None:
                    trial = study.tell_invalid(pending, outcome.invalid)
                    stats.invalid += 1
                elif outcome.error is not None:
                    trial = study.tell_failure(pending, outcome.error)
                    stats.failed += 1
                else:
                    details = dict(outcome.details)
                    details.setdefault("worker", worker)
                    details.setdefault("elapsed_s", outcome.elapsed_s)
                    trial = study.tell(pending, outcome.metrics or {}, details)
                    completed = trial.state == TrialState.COMPLETE
                    if completed:
                        stats.completed += 1
                    else:
                        stats.failed += 1
            finally:
                heartbeat.set(None)
                store.finish_claim(claim, completed=completed)
            if on_trial is not None:
                on_trial(trial)
            if not completed and trial.state == TrialState.FAIL:
                n_failed = study.counts()[TrialState.FAIL.value]
                if n_failed >= max_failures:
                    store.stop_study(
                        study_name,
                        f"{n_failed} trials failed (max_failures={max_failures}); last: {trial.reason}",
                    )
                    break
    except StudyError:
        raise
    finally:
        executor.close()
        heartbeat.close()
    return stats
