"""The fleet under faults, on the real PostgreSQL: a fleet worker SIGKILLed mid-trial, and the
database stopped for 5 s while three studies run. Nothing measured may be lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_faults import lost

import paretotune as pt
from paretotune.storage import FleetState, StudyStore
from paretotune.workers.fleet import submit

OBJ = {"latency_p50_ms": "min", "accuracy": "max"}
SPACE = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.01, default=0.0)})
NAMES = ("fleet-a", "fleet-b", "fleet-c")


def _submit_three(url: str, n_trials: int, evaluator: str = "slow_fake_evaluator") -> None:
    for i, name in enumerate(NAMES):
        study = pt.create_study(name, url, space=SPACE, objectives=OBJ, sampler="random", seed=i,
                                task=f"paretotune.testing:{evaluator}", worker_grace_s=2,
                                warm_start="none")
        submit(study, n_trials=n_trials)


def _worker(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "paretotune.cli", "worker", "--storage", url,
                             "--exit-when-idle", "4"], stderr=subprocess.DEVNULL)


def _done(url: str) -> bool:
    return all(r["state"] == FleetState.DONE and r["running"] == 0 for r in StudyStore(url).fleet_studies())


def _wait(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not _done(url):
        time.sleep(0.3)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def _check(url: str, n_trials: int) -> list[pt.Trial]:
    failed: list[pt.Trial] = []
    for name in NAMES:
        study = pt.load_study(name, url)
        counts = study.counts()
        assert counts["COMPLETE"] == n_trials and counts["RUNNING"] == 0 and counts["WAITING"] == 0, (name, counts)
        assert lost(study) == 0
        failed += [t for t in study.trials if t.state == pt.TrialState.FAIL]
    return failed


@pytest.mark.postgres
def test_a_fleet_worker_killed_mid_trial_loses_nothing_across_studies(pg_url: str) -> None:
    _submit_three(pg_url, 4, "sluggish_fake_evaluator")
    procs = [_worker(pg_url)]  # the survivor
    hit: tuple[str, int] | None = None
    for _ in range(3):  # a kill that lands between two trials is tried again on a new victim
        victim = _worker(pg_url)
        procs.append(victim)
        deadline, running = time.monotonic() + 120, None
        while time.monotonic() < deadline and running is None:
            for w in StudyStore(pg_url).fleet_workers():
                if w["pid"] == victim.pid and w["study"] and w["trial_number"] is not None:
                    trial = pt.load_study(w["study"], pg_url).trial(w["trial_number"])
                    if trial.state == pt.TrialState.RUNNING:
                        running = (w["study"], w["trial_number"])
            time.sleep(0.05)
        assert running is not None, "the victim never ran a trial"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        if pt.load_study(running[0], pg_url).trial(running[1]).state != pt.TrialState.COMPLETE:
            hit = running
            break
    assert hit is not None, "no kill landed mid-trial in three tries"
    _wait(pg_url, procs, 300)
    failed = _check(pg_url, 4)
    assert failed and all((t.reason or "").startswith("worker lost") for t in failed)
    lost_trial = pt.load_study(hit[0], pg_url).trial(hit[1])
    assert lost_trial.state == pt.TrialState.FAIL and lost_trial.reason.startswith("worker lost")
    frozen = pt.load_study(hit[0], pg_url).optuna_study.trials
    retries = [ft for ft in frozen if ft.user_attrs.get("retry_of") == hit[1]]
    assert len(retries) == 1 and retries[0].params == frozen[hit[1]].params  # queued again, once


@pytest.mark.postgres
def test_postgres_stopped_for_five_seconds_while_three_studies_run(pg_cluster, pg_url: str) -> None:
    _submit_three(pg_url, 6)
    procs = [_worker(pg_url), _worker(pg_url)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(StudyStore(pg_url).claim_counts(n)["done"] for n in NAMES) < 4:
        time.sleep(0.2)
    pg_cluster.stop("fast")
    time.sleep(5)
    pg_cluster.start()
    _wait(pg_url, procs, 300)
    _check(pg_url, 6)
