"""The trial lifecycle's parts that every backend shares (workers/lifecycle.py)."""

from __future__ import annotations

import json
import threading
import time

import pytest

import paretotune as pt
from paretotune.evaluators.slot import slot_name
from paretotune.storage import StopKind
from paretotune.workers import reaper
from paretotune.workers.lifecycle import (
    Claimed,
    Heartbeat,
    Outcome,
    claim_trial,
    finish,
    release,
    tell,
)
from paretotune.workers.reaper import UNCLAIMED_REASON, settle_unclaimed


def test_an_outcome_is_a_trial_state_with_its_reason() -> None:
    done = Outcome.complete({"accuracy": 0.9}, {"stable": True}, 1.5)
    assert done.state == pt.TrialState.COMPLETE and done.reason is None
    failed, invalid = Outcome.failed("timeout after 3 s"), Outcome.invalid("int4 on torch")
    assert (failed.state, failed.reason) == (pt.TrialState.FAIL, "timeout after 3 s")
    assert (invalid.state, invalid.reason) == (pt.TrialState.INVALID, "int4 on torch")
    with pytest.raises(ValueError, match="needs a reason"):
        Outcome(pt.TrialState.FAIL)
    with pytest.raises(ValueError, match="has no reason"):
        Outcome(pt.TrialState.COMPLETE, reason="why")
    with pytest.raises(ValueError, match="COMPLETE, FAIL or INVALID"):
        Outcome(pt.TrialState.RUNNING)
    for outcome in (done, failed, invalid):  # what a Ray actor sends its driver
        assert Outcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome


def test_extras_never_override_the_evaluation_and_skip_failures() -> None:
    done = Outcome.complete({"accuracy": 0.9, "gpu_util": 0.5}, {"worker": "trial's"})
    merged = done.with_extras({"gpu_util": 0.1, "power_w": 300.0}, {"worker": "w1", "driver": "d"})
    assert merged.metrics == {"accuracy": 0.9, "gpu_util": 0.5, "power_w": 300.0}
    assert merged.details == {"worker": "trial's", "driver": "d"}
    assert Outcome.failed("x").with_extras({"power_w": 1.0}).metrics == {}


def _study(storage_url: str, name: str, max_failures: int) -> pt.Study:
    return pt.create_study(name, storage=storage_url, space=pt.SearchSpace({"x": pt.Float(0.0, 1.0, default=0.0)}),
                           objectives={"accuracy": "max"}, sampler="random", seed=0,
                           max_failures=max_failures)


def test_claim_tell_finish_on_the_store(storage_url: str) -> None:
    """One trial's way through the store as every backend walks it; the failure that reaches
    max_failures stops the study with the FAILED kind."""
    study = _study(storage_url, "life", max_failures=2)
    study.store.set_target(study.name, 3)
    beat = Heartbeat(study.store, 0.05)
    try:
        first = claim_trial(study, "w1", 3, 5.0, beat)
        assert first is not None and first.pending.number == 0
        assert beat.held() == [first.claim]  # heartbeated from the moment it is taken
        trial = tell(study, first.pending, Outcome.complete({"accuracy": 0.5}), 5.0)
        assert trial.state == pt.TrialState.COMPLETE and trial.metrics["accuracy"] == 0.5
        assert finish(study, first.claim, trial, 3, 5.0) is False
        beat.release(first.claim)
        assert study.store.claim_counts(study.name)["done"] == 1
        stops = []
        for _ in range(2):
            claimed = claim_trial(study, "w1", 3, 5.0, beat)
            assert claimed is not None
            failed = tell(study, claimed.pending, Outcome.failed("boom"), 5.0)
            assert failed.state == pt.TrialState.FAIL and failed.reason == "boom"
            stops.append(finish(study, claimed.claim, failed, 3, 5.0))
        assert stops == [False, True]
        stop = study.store.stopped(study.name)
        assert stop is not None and stop.kind is StopKind.FAILED and "max_failures=2" in stop.reason
        assert claim_trial(study, "w1", 3, 5.0, beat) is None  # a stopped study hands out no slot
    finally:
        beat.close()


def test_an_ask_that_fails_gives_its_slot_back(storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _study(storage_url, "ask-fails", max_failures=5)

    def broken_ask() -> None:
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr(study, "ask", broken_ask)
    beat = Heartbeat(study.store, 0.05)
    try:
        with pytest.raises(RuntimeError, match="sampler exploded"):
            claim_trial(study, "w1", 2, 1.0, beat)
        assert beat.held() == []
    finally:
        beat.close()
    assert study.store.claim_counts(study.name) == {"active": 0, "done": 0, "released": 1}
    release(study, 12345)  # an unknown claim: logged, never raised


def test_a_claim_stays_alive_while_its_ask_waits_behind_a_timed_window(
    storage_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ask waits for the machine's timing slot while a neighbour times; its claim is
    heartbeated meanwhile, so a reaper does not hand its budget slot to another trial (the
    budget would overshoot: the trial completes on a released claim)."""
    from paretotune.evaluators.slot import ENV, TimingSlot

    monkeypatch.setenv(ENV, str(tmp_path / "slots"))
    (tmp_path / "slots").mkdir()
    monkeypatch.setattr(reaper, "store_healthy_for", lambda: float("inf"))  # no outage in this process
    study = pt.create_study("slow-ask", storage=storage_url, space=pt.SearchSpace({"x": pt.Float(0.0, 1.0)}),
                            objectives={"accuracy": "max"}, sampler="random", seed=0, worker_grace_s=1)
    neighbour = TimingSlot(slot_name(False), str(tmp_path / "slots"))
    beat = Heartbeat(study.store, 0.1)
    got: list[object] = []
    try:
        with neighbour.exclusive():  # another worker's timed window, longer than the grace period
            thread = threading.Thread(target=lambda: got.append(claim_trial(study, "w1", 1, 5.0, beat)))
            thread.start()
            time.sleep(2.0)
            assert not got, "the ask ran while a neighbour held the timing slot"
            assert reaper.reap_stale(study, 1.0) == []
            assert study.store.claim_counts(study.name) == {"active": 1, "done": 0, "released": 0}
        thread.join(30)
        claimed = got[0]
        assert isinstance(claimed, Claimed)
        trial = tell(study, claimed.pending, Outcome.complete({"accuracy": 0.5}), 5.0)
        finish(study, claimed.claim, trial, 1, 5.0)
        assert study.store.claim_counts(study.name) == {"active": 0, "done": 1, "released": 0}
        assert claim_trial(study, "w1", 1, 5.0, beat) is None  # the budget is full
    finally:
        beat.close()


def test_a_claim_reaped_before_its_bind_fails_the_trial_and_claims_again(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that stalls past the grace period between its claim and its bind finds the
    claim reaped: the bind is refused, the asked trial fails as lost and its config is queued
    again, and the trial that runs holds a fresh claim: a trial never runs on a released slot."""
    study = _study(storage_url, "reaped-ask", max_failures=5)
    real_ask = study.ask
    reaped: list[int] = []

    def stalled_ask():  # the reaper releases the claim while this worker is stalled in its ask
        pending = real_ask()
        for claim in study.store.active_claims(study.name):
            study.store.finish_claim(claim["id"], completed=False)
            reaped.append(claim["id"])
        monkeypatch.setattr(study, "ask", real_ask)
        return pending

    monkeypatch.setattr(study, "ask", stalled_ask)
    beat = Heartbeat(study.store, 60)
    try:
        claimed = claim_trial(study, "w1", 2, 5.0, beat)
        assert claimed is not None and beat.held() == [claimed.claim]
    finally:
        beat.close()
    lost = study.trial(0)
    assert lost.state == pt.TrialState.FAIL and "was reaped before its trial was bound" in (lost.reason or "")
    assert claimed.pending.number == 1 and claimed.pending.config == lost.config  # the config again
    assert study.store.claim_counts(study.name) == {"active": 1, "done": 0, "released": 1}
    assert reaped and reaped[0] != claimed.claim
    assert not study.store.bind_claim(reaped[0], claimed.pending.number)  # a released claim binds nothing


def test_a_finished_study_settles_only_the_trials_no_claim_holds(storage_url: str) -> None:
    """`settle_unclaimed` fails an asked-but-never-claimed trial, and does nothing while a claim
    is active: that claim's trial may be between its ask and its bind."""
    study = _study(storage_url, "settle", max_failures=5)
    beat = Heartbeat(study.store, 0.05)
    claimed = claim_trial(study, "w1", 2, 5.0, beat)
    beat.close()
    assert claimed is not None
    orphan = study.optuna_study.ask()  # no claim: its worker was lost between ask and bind
    assert settle_unclaimed(study) == []  # a claim is active: nothing is touched
    assert study.trial_state(orphan.number) == pt.TrialState.RUNNING
    finish(study, claimed.claim, tell(study, claimed.pending, Outcome.complete({"accuracy": 0.5}), 5.0), 2, 5.0)
    assert settle_unclaimed(study) == [orphan.number]
    assert study.trial(orphan.number).reason == UNCLAIMED_REASON
    assert study.counts()["RUNNING"] == 0 and settle_unclaimed(study) == []


def test_the_monitor_logs_a_repeated_error_once_a_minute(tmp_path, caplog, monkeypatch) -> None:
    """A tick runs every second: a progress display that keeps failing is one warning, not one a
    second, and a different error, or the same one a minute later, is logged again."""
    import logging

    from paretotune.workers import lifecycle

    study = _study(f"sqlite:///{tmp_path}/m.db", "monitor", max_failures=5)

    class Broken:
        message = "terminal gone"

        def update(self) -> None:
            raise RuntimeError(self.message)

    progress = Broken()
    monitor = lifecycle.Monitor(study, progress)
    clock = [1000.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="paretotune.workers.lifecycle"):
        for _ in range(5):
            monitor.tick()
            clock[0] += 1.0
        progress.message = "disk full"
        monitor.tick()
        clock[0] += lifecycle.MONITOR_REPEAT_S
        monitor.tick()
    assert [r.getMessage() for r in caplog.records if r.name == lifecycle.log.name] == [
        "monitor: RuntimeError: terminal gone", "monitor: RuntimeError: disk full", "monitor: RuntimeError: disk full"]
