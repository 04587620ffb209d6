"""The trial lifecycle's parts that every backend shares (workers/lifecycle.py)."""

from __future__ import annotations

import json

import pytest

import paretotune as pt
from paretotune.storage import StopKind
from paretotune.workers.lifecycle import Heartbeat, Outcome, claim_trial, finish, release, tell
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
        first = claim_trial(study, "w1", 3, 5.0)
        assert first is not None and first.pending.number == 0
        beat.hold(first.claim)
        assert beat.held() == [first.claim]
        trial = tell(study, first.pending, Outcome.complete({"accuracy": 0.5}), 5.0)
        assert trial.state == pt.TrialState.COMPLETE and trial.metrics["accuracy"] == 0.5
        assert finish(study, first.claim, trial, 3, 5.0) is False
        beat.release(first.claim)
        assert study.store.claim_counts(study.name)["done"] == 1
        stops = []
        for _ in range(2):
            claimed = claim_trial(study, "w1", 3, 5.0)
            assert claimed is not None
            failed = tell(study, claimed.pending, Outcome.failed("boom"), 5.0)
            assert failed.state == pt.TrialState.FAIL and failed.reason == "boom"
            stops.append(finish(study, claimed.claim, failed, 3, 5.0))
        assert stops == [False, True]
        stop = study.store.stopped(study.name)
        assert stop is not None and stop.kind is StopKind.FAILED and "max_failures=2" in stop.reason
        assert claim_trial(study, "w1", 3, 5.0) is None  # a stopped study hands out no slot
    finally:
        beat.close()


def test_an_ask_that_fails_gives_its_slot_back(storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _study(storage_url, "ask-fails", max_failures=5)

    def broken_ask() -> None:
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr(study, "ask", broken_ask)
    with pytest.raises(RuntimeError, match="sampler exploded"):
        claim_trial(study, "w1", 2, 1.0)
    assert study.store.claim_counts(study.name) == {"active": 0, "done": 0, "released": 1}
    release(study, 12345)  # an unknown claim: logged, never raised


def test_a_finished_study_settles_only_the_trials_no_claim_holds(storage_url: str) -> None:
    """`settle_unclaimed` fails an asked-but-never-claimed trial, and does nothing while a claim
    is active: that claim's trial may be between its ask and its bind."""
    study = _study(storage_url, "settle", max_failures=5)
    claimed = claim_trial(study, "w1", 2, 5.0)
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
