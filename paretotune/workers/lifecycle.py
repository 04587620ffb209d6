"""One trial's lifecycle, shared by the local loop, the pool and the Ray backend.

    claim_trial (budget slot -> ask -> bind)  ->  evaluate: an Outcome  ->  tell  ->  finish

A `Heartbeat` keeps every held claim alive from a thread, so a long build is not mistaken for
a lost worker; a `Monitor` reaps the trials of lost workers and refreshes the progress bar.
Store calls ride out outages (``retry``); a measurement that cannot be delivered is spooled to
disk and delivered by the next worker of the study on this machine.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paretotune.errors import StorageError, StudyError
from paretotune.evaluators.slot import timing_slot
from paretotune.search import PendingTrial, Study, Trial, TrialState
from paretotune.storage import FleetState, StopKind, StudyStore
from paretotune.storage.retry import is_transient, note_store_failure, retry
from paretotune.workers.reaper import MAX_RETRIES, reap_stale, settle_unclaimed
from paretotune.workers.retry import Spool

log = logging.getLogger(__name__)

#: seconds an idle worker waits before re-checking for a released budget slot
IDLE_POLL_S = 0.2
#: seconds between the monitor's reaps and progress refreshes
PROGRESS_POLL_S = 1.0
#: seconds before the monitor logs the same error as a warning again
MONITOR_REPEAT_S = 60.0


def worker_id(prefix: str = "w") -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def heartbeat_interval(grace_s: float) -> float:
    """Five heartbeats fit in one grace period."""
    return max(0.2, min(2.0, grace_s / 5))


def max_failures_for(study: Study, target: int) -> int:
    configured = study.spec.get("max_failures")
    return int(configured) if configured else max(20, target)


# -- the outcome of one evaluation ----------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What one evaluation gave, as the trial state it becomes: COMPLETE with its metrics,
    FAIL or INVALID with its reason."""

    state: TrialState
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    elapsed_s: float = 0.0

    def __post_init__(self) -> None:
        if self.state not in (TrialState.COMPLETE, TrialState.FAIL, TrialState.INVALID):
            raise ValueError(f"an Outcome is COMPLETE, FAIL or INVALID, got {self.state}")
        if (self.state == TrialState.COMPLETE) == (self.reason is not None):
            raise ValueError(f"a {self.state.value} Outcome {'has no' if self.reason else 'needs a'} reason")

    @classmethod
    def complete(cls, metrics: Mapping[str, Any], details: Mapping[str, Any] | None = None,
                 elapsed_s: float = 0.0) -> Outcome:
        return cls(TrialState.COMPLETE, dict(metrics), dict(details or {}), None, elapsed_s)

    @classmethod
    def failed(cls, reason: str, elapsed_s: float = 0.0) -> Outcome:
        return cls(TrialState.FAIL, reason=reason, elapsed_s=elapsed_s)

    @classmethod
    def invalid(cls, reason: str, elapsed_s: float = 0.0) -> Outcome:
        return cls(TrialState.INVALID, reason=reason, elapsed_s=elapsed_s)

    def with_extras(self, metrics: Mapping[str, Any] | None = None,
                    details: Mapping[str, Any] | None = None) -> Outcome:
        """The same outcome with telemetry metrics and run details added (the evaluation's own
        values win)."""
        if self.state != TrialState.COMPLETE:
            return self
        return Outcome(self.state, {**dict(metrics or {}), **self.metrics},
                       {**dict(details or {}), **self.details}, None, self.elapsed_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what a Ray actor reports to the driver)."""
        return {"state": self.state.value, "metrics": self.metrics, "details": self.details,
                "reason": self.reason, "elapsed_s": self.elapsed_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(TrialState(data["state"]), dict(data.get("metrics") or {}), dict(data.get("details") or {}),
                   data.get("reason"), float(data.get("elapsed_s") or 0.0))


# -- threads ------------------------------------------------------------------------------------
class Heartbeat:
    """Keeps the held claims' heartbeats fresh from a thread; an outage only pauses it."""

    def __init__(self, store: StudyStore, interval_s: float, *, name: str = "paretotune-heartbeat") -> None:
        self._store = store
        self._interval = interval_s
        self._claims: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def hold(self, claim: int) -> None:
        with self._lock:
            self._claims.add(claim)

    def release(self, claim: int) -> None:
        with self._lock:
            self._claims.discard(claim)

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._claims)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            claims = self.held()
            if not claims:
                continue
            try:
                self._store.heartbeat(claims)
            except Exception as exc:  # a store hiccup must not kill the heartbeat thread
                if is_transient(exc):
                    note_store_failure()
                log.debug("heartbeat failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Monitor:
    """A thread that reaps the trials of lost workers and refreshes ``progress`` (anything
    with ``update()``); `tick` does one round, for a caller that has its own loop."""

    def __init__(self, study: Study, progress: Any, *, name: str = "paretotune-monitor") -> None:
        self.study, self.progress = study, progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: the last error logged as a warning, and when: the same one again within
        #: MONITOR_REPEAT_S goes to the debug log (a tick runs every second)
        self._last_error: tuple[str, float] | None = None

    def tick(self) -> None:
        """One round; an outage only pauses it, any other error is logged (the same error
        again only once per MONITOR_REPEAT_S)."""
        try:
            self.progress.update()
            reap_stale(self.study, self.study.worker_grace_s)
        except Exception as exc:
            if is_transient(exc):
                note_store_failure()
                log.debug("monitor: store unavailable (%s)", type(exc).__name__)
                return
            text, now = f"{type(exc).__name__}: {exc}", time.monotonic()
            if self._last_error is not None and self._last_error[0] == text and now - self._last_error[1] < MONITOR_REPEAT_S:
                log.debug("monitor (again): %s", text)
                return
            self._last_error = (text, now)
            log.warning("monitor: %s", text)

    def _run(self) -> None:
        while not self._stop.wait(PROGRESS_POLL_S):
            self.tick()

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# -- claim, ask, bind -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claimed:
    """A budget slot held for one asked trial."""

    claim: int
    pending: PendingTrial


def _ask(study: Study) -> PendingTrial:
    """The sampler's work (TPE/GP model fitting: CPU-heavy) waits while another worker times:
    it holds the machine's timing slot shared (`evaluators.slot`). Only the ask: a tell may
    wait for the baseline, whose timing would then wait for it."""
    with timing_slot().shared():
        return study.ask()


def claim_trial(study: Study, worker: str, n_trials: int, window_s: float, heartbeat: Heartbeat) -> Claimed | None:
    """Take a budget slot and ask the sampler for the trial that fills it; None when the
    budget is spoken for (or the study is stopped). The slot goes back if the ask fails.

    ``heartbeat`` holds the claim from the moment it is taken: the ask can wait long for the
    timing slot behind a neighbour's timed window, and a claim left without heartbeats that
    long is reaped, its slot handed to another trial while this one still runs (the budget
    overshoots). A claim reaped all the same (this worker stalled past the grace period)
    refuses the bind: its trial fails as lost, its config is queued again, and a new slot is
    claimed for it."""
    store = study.store
    while True:
        claim = retry(store.claim, study.name, worker, n_trials, what="claim", window_s=window_s)
        if claim is None:
            return None
        heartbeat.hold(claim)
        try:
            pending = retry(_ask, study, what="ask", window_s=window_s)
            bound = retry(store.bind_claim, claim, pending.number, what="claim", window_s=window_s)
        except BaseException:
            heartbeat.release(claim)
            release(study, claim)
            raise
        if bound:
            return Claimed(claim, pending)
        heartbeat.release(claim)
        reason = (f"worker lost: the budget claim of {worker} was reaped before its trial was bound "
                  f"(no heartbeat for {study.worker_grace_s:g} s)")
        retry(study.fail_lost, pending.number, reason, MAX_RETRIES, what="reap", window_s=window_s)


def budget_left(study: Study, n_trials: int, window_s: float) -> bool:
    """After a refused claim: False when nothing more will run (stopped, or the budget is
    done); True while a running trial may still fail and free its slot."""
    store = study.store
    if retry(store.stopped, study.name, what="status", window_s=window_s) is not None:
        return False
    counts = retry(store.claim_counts, study.name, what="status", window_s=window_s)
    return counts["done"] < n_trials and counts["active"] > 0


# -- tell, finish ---------------------------------------------------------------------------------
def tell(study: Study, pending: PendingTrial, outcome: Outcome, window_s: float,
         *, baseline_wait_s: float | None = None) -> Trial:
    """Record ``outcome`` as the trial's state. A measurement the store cannot take within the
    retry window is spooled to disk before the StorageError is raised: nothing measured is lost."""
    if outcome.state == TrialState.INVALID:
        return retry(study.tell_invalid, pending, outcome.reason, what="tell", window_s=window_s)
    if outcome.state == TrialState.FAIL:
        return retry(study.tell_failure, pending, outcome.reason, what="tell", window_s=window_s)
    details = {**outcome.details, "elapsed_s": outcome.details.get("elapsed_s", outcome.elapsed_s)}
    wait = {} if baseline_wait_s is None else {"baseline_wait_s": baseline_wait_s}
    try:
        return retry(study.tell, pending, outcome.metrics, details, what="tell", window_s=window_s, **wait)
    except StudyError:
        raise
    except Exception as exc:
        spool = Spool(study.name)
        spool.put({
            "trial_number": pending.number, "config_hash": pending.config.hash,
            "config": pending.config.to_json(), "metrics": outcome.metrics, "details": details,
        })
        raise StorageError(
            f"the store stayed unreachable for {window_s:g} s; the measurement of trial "
            f"{pending.number} is kept in {spool.path} and will be delivered by the next worker "
            f"of {study.name!r} on this machine"
        ) from exc


def finish(study: Study, claim: int, trial: Trial, n_trials: int, window_s: float) -> bool:
    """Settle the claim of a told trial (a completed one counts against the budget, the others
    give their slot back). True when this failure was one too many: the study is stopped."""
    retry(study.store.finish_claim, claim, completed=trial.state == TrialState.COMPLETE,
          what="claim", window_s=window_s)
    if trial.state != TrialState.FAIL:
        return False
    n_failed = retry(study.counts, what="status", window_s=window_s)[TrialState.FAIL.value]
    limit = max_failures_for(study, n_trials)
    if n_failed < limit:
        return False
    study.store.stop_study(study.name, f"{n_failed} trials failed (max_failures={limit}); last: {trial.reason}",
                           StopKind.FAILED)
    return True


def mark_done(study: Study, window_s: float) -> None:
    """A fleet study with nothing more to run: FAIL the trials no claim holds
    (`settle_unclaimed`), then mark it DONE, so that DONE means nothing is left RUNNING."""
    retry(settle_unclaimed, study, what="settle", window_s=window_s)
    retry(study.store.set_fleet, study.name, state=FleetState.DONE, what="status", window_s=window_s)


def release(study: Study, claim: int) -> None:
    """Give a claim back without a told trial (the reaper releases it if this fails too)."""
    try:
        study.store.finish_claim(claim, completed=False)
    except Exception as exc:
        log.warning("could not release claim %d: %s", claim, exc)


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


