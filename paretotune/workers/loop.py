"""The trial loop every worker runs: claim a budget slot, ask, evaluate, tell.

The same loop serves the local pool, `paretotune worker` started by hand, and the in-process
single worker. It needs nothing but a storage URL and a study name: the spec in the store says
the rest. Every store call rides out outages (``retry``); a measurement that cannot be
delivered is spooled to disk before the worker gives up, and delivered by the next worker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paretotune.errors import StorageError, StudyError
from paretotune.evaluators.devices import telemetry
from paretotune.evaluators.slot import timing_slot
from paretotune.search import PendingTrial, Study, Trial, TrialState, load_study_from_store
from paretotune.space import Config
from paretotune.storage import StudyStore
from paretotune.workers.executor import Outcome, TrialExecutor
from paretotune.workers.reaper import reap_stale
from paretotune.workers.retry import DEFAULT_RETRY_WINDOW_S, Spool, retry

log = logging.getLogger(__name__)

#: seconds an idle worker waits before re-checking for a released budget slot
IDLE_POLL_S = 0.2


def heartbeat_interval(grace_s: float) -> float:
    """Five heartbeats fit in one grace period."""
    return max(0.2, min(2.0, grace_s / 5))


def worker_id(prefix: str = "w") -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerStats:
    completed: int = 0
    failed: int = 0
    invalid: int = 0


class _Heartbeat:
    """Keeps the active claim's heartbeat fresh from a thread, so a long build stays alive."""

    def __init__(self, store: StudyStore, interval_s: float) -> None:
        self._store = store
        self._interval = interval_s
        self._claim: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paretotune-heartbeat", daemon=True)
        self._thread.start()

    def set(self, claim: int | None) -> None:
        self._claim = claim

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            claim = self._claim
            if claim is None:
                continue
            try:
                self._store.heartbeat([claim])
            except Exception as exc:  # a store hiccup must not kill the heartbeat thread
                log.debug("heartbeat failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def max_failures_for(study: Study, target: int) -> int:
    configured = study.spec.get("max_failures")
    return int(configured) if configured else max(20, target)


def deliver_spool(study: Study, window_s: float) -> int:
    """Store measurements an earlier worker on this machine could not deliver."""
    spool = Spool(study.name)
    entries = spool.take_all()
    delivered = 0
    for i, entry in enumerate(entries):
        try:
            retry(
                study.store.record_measurement, study.name, entry["trial_number"], entry["config_hash"],
                entry["config"], entry["metrics"], entry["details"], what="delivering spooled measurement",
                window_s=window_s,
            )
            delivered += 1
        except Exception:
            for rest in entries[i:]:
                spool.put(rest)
            raise
    if delivered:
        log.warning("delivered %d spooled measurement(s) of %r", delivered, study.name)
    return delivered


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


def _ask(study: Study) -> PendingTrial:
    """The sampler's work (TPE/GP model fitting: CPU-heavy) waits while another worker times:
    it holds the machine's timing slot shared (`evaluators.slot`). Only the ask: a tell may
    wait for the baseline, whose timing would then wait for it."""
    with timing_slot().shared():
        return study.ask()


def _tell(study: Study, pending: PendingTrial, outcome: Outcome, worker: str, window_s: float) -> Trial:
    if outcome.invalid is not None:
        return retry(study.tell_invalid, pending, outcome.invalid, what="tell", window_s=window_s)
    if outcome.error is not None:
        return retry(study.tell_failure, pending, outcome.error, what="tell", window_s=window_s)
    details = dict(outcome.details)
    details.setdefault("worker", worker)
    details.setdefault("elapsed_s", outcome.elapsed_s)
    metrics = outcome.metrics or {}
    try:
        return retry(study.tell, pending, metrics, details, what="tell", window_s=window_s)
    except StudyError:
        raise
    except Exception as exc:
        spool = Spool(study.name)
        spool.put({
            "trial_number": pending.number, "config_hash": pending.config.hash,
            "config": pending.config.to_json(), "metrics": metrics, "details": details,
        })
        raise StorageError(
            f"the store stayed unreachable for {window_s:g} s; the measurement of trial "
            f"{pending.number} is kept in {spool.path} and will be delivered by the next worker "
            f"of {study.name!r} on this machine"
        ) from exc


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
) -> WorkerStats:
    """Work on the study until it holds ``n_trials`` completed trials, it is stopped, or
    ``stop`` is set. Returns what this worker did."""
    worker = worker or worker_id()
    w = retry_window_s
    store = storage if isinstance(storage, StudyStore) else retry(StudyStore, storage, what="connect", window_s=w)
    study = retry(load_study_from_store, study_name, store, worker=worker, what="load study", window_s=w)
    timeout = trial_timeout_s if trial_timeout_s is not None else study.trial_timeout_s
    grace = study.worker_grace_s
    max_failures = max_failures_for(study, n_trials)

    def reap_now() -> None:
        retry(reap_stale, study, grace, what="reap", window_s=w)

    study.on_wait = reap_now
    stats = WorkerStats()
    deliver_spool(study, w)
    heartbeat = _Heartbeat(store, heartbeat_interval(grace))
    executor = TrialExecutor(evaluator, timeout_s=timeout)
    try:
        while stop is None or not stop.is_set():
            # The baseline runs first: while another worker runs it, wait (reaping, so a
            # baseline held by a dead worker is queued again and this worker takes it).
            if not retry(study.baseline_gate, what="status", window_s=w):
                reap_now()
                time.sleep(IDLE_POLL_S)
                continue
            claim = retry(store.claim, study_name, worker, n_trials, what="claim", window_s=w)
            if claim is None:
                if retry(store.stopped_reason, study_name, what="status", window_s=w):
                    break
                counts = retry(store.claim_counts, study_name, what="status", window_s=w)
                if counts["done"] >= n_trials or counts["active"] == 0:
                    break
                # A running trial may still fail and free its slot, or its worker may be dead:
                # whichever process notices first reaps it.
                reap_now()
                time.sleep(IDLE_POLL_S)
                continue
            heartbeat.set(claim)
            completed = False
            masked: set[int | signal.Signals] | None = None
            pending: PendingTrial | None = None
            study.last_asked = None
            try:
                pending = retry(_ask, study, what="ask", window_s=w)
                retry(store.bind_claim, claim, pending.number, what="claim", window_s=w)
                with telemetry() as gpu:  # {} without an NVIDIA driver
                    outcome = executor.run(pending.config)
                if outcome.metrics is not None:
                    for k, v in gpu.items():
                        outcome.metrics.setdefault(k, v)
                trial = _tell(study, pending, outcome, worker, w)
                completed = trial.state == TrialState.COMPLETE
                if trial.state == TrialState.INVALID:
                    stats.invalid += 1
                elif completed:
                    stats.completed += 1
                else:
                    stats.failed += 1
            except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM from the pool (Interrupted)
                # a second signal (the pool's SIGTERM) must not cut this record short: hold
                # them until the claim is settled below
                masked = _hold_signals()
                number = pending.number if pending is not None else study.last_asked
                if number is not None and not completed:
                    _fail_interrupted(study, number, getattr(exc, "signame", "SIGINT"))
                raise
            finally:
                heartbeat.set(None)
                try:
                    retry(store.finish_claim, claim, completed=completed, what="claim", window_s=w)
                except Exception as exc:  # the reaper will release it
                    log.warning("could not finish claim %d: %s", claim, exc)
                finally:
                    if masked is not None:
                        signal.pthread_sigmask(signal.SIG_SETMASK, masked)
            if on_trial is not None:
                on_trial(trial)
            if trial.state == TrialState.FAIL:
                n_failed = retry(study.counts, what="status", window_s=w)[TrialState.FAIL.value]
                if n_failed >= max_failures:
                    store.stop_study(
                        study_name,
                        f"{n_failed} trials failed (max_failures={max_failures}); last: {trial.reason}",
                    )
                    break
    finally:
        executor.close()
        heartbeat.close()
    return stats
