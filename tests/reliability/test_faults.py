"""The reliability suite: workers killed, the database stopped, the controller killed,
many workers on one PostgreSQL. Nothing measured may be lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

import paretotune as pt
from paretotune.testing import null_evaluator
from paretotune.workers.reaper import MAX_RETRIES

import helpers_eval

OBJ = {"latency_p50_ms": "min", "accuracy": "max"}
FIGURES_ENV = "PARETOTUNE_FIGURES"  # benchmarks/reliability.py collects these lines


def record_figure(**row: object) -> None:
    """Append what a fault test injected and what it saw, for the reliability figures."""
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def lost(study: pt.Study) -> int:
    """Completed trials without their measurement row, plus measurements of no completed trial
    that nothing explains. A worker reaped as lost while it was telling (a 2 s grace under load)
    leaves a measurement row of a FAIL "worker lost" trial whose config was measured again:
    kept on purpose (nothing measured is thrown away), so not counted."""
    measured = {m["trial_number"] for m in study.store.measurements(study.name)}
    done = {t.number for t in study.completed()}
    by_number = {t.number: t for t in study.trials}
    explained = {
        n for n in measured - done
        if by_number[n].state == pt.TrialState.FAIL and (by_number[n].reason or "").startswith("worker lost")
    }
    return len(done - measured) + len(measured - done - explained)


def budget_diagnosis(study: pt.Study) -> str:
    """What a budget assertion failed on: the claim counts, and each COMPLETE trial that no
    done claim accounts for (its Optuna attributes say how it was asked and told)."""
    import sqlalchemy as sa

    from paretotune.storage.store import claims_table

    with study.store.engine.connect() as conn:
        claims = conn.execute(sa.select(claims_table).where(claims_table.c.study == study.name)).mappings().all()
    by_trial: dict[int, list[str]] = {}
    for c in claims:
        if c["trial_number"] is not None:
            by_trial.setdefault(c["trial_number"], []).append(f"{c['id']}:{c['state']}:{c['worker']}")
    done = {c["trial_number"] for c in claims if c["state"] == "done"}
    frozen = {ft.number: ft for ft in study.optuna_study.get_trials(deepcopy=False)}
    odd = [
        f"trial {t.number} {t.config and t.config.to_json()} claims={by_trial.get(t.number)} "
        f"attrs={ {k: v for k, v in frozen[t.number].user_attrs.items() if k != 'metrics'} }"
        for t in study.trials if t.state == pt.TrialState.COMPLETE and t.number not in done
    ]
    return f"counts={study.counts()} claims={study.store.claim_counts(study.name)}; unaccounted: {odd}"


SPACE = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.01, default=0.0)})


def pool_workers(parent_pid: int) -> list[psutil.Process]:
    out = []
    for child in psutil.Process(parent_pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "paretotune.workers._entry" in cmd and "worker" in cmd:
            out.append(child)
    return out


def run_in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, errors


@pytest.mark.postgres
def test_sigkill_workers_mid_trial_loses_nothing(pg_url: str) -> None:
    study = pt.create_study("kills", pg_url, space=SPACE, objectives=OBJ, sampler="random", seed=5,
                            worker_grace_s=2)
    thread, errors = run_in_thread(study.optimize, helpers_eval.slow, n_trials=40, n_workers=2)
    kills: list[tuple[float, int]] = []
    time.sleep(4)
    for _ in range(3):
        victims = pool_workers(os.getpid())
        if not victims:
            break
        running = {t.number for t in pt.load_study("kills", pg_url).trials if t.state == pt.TrialState.RUNNING}
        victims[0].send_signal(signal.SIGKILL)
        kills.append((time.time(), len(running)))
        time.sleep(3)
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors
    assert len(kills) == 3
    study = pt.load_study("kills", pg_url)
    counts = study.counts()
    assert counts["COMPLETE"] == 40 and counts["RUNNING"] == 0 and counts["WAITING"] == 0
    failed = [t for t in study.trials if t.state == pt.TrialState.FAIL]
    assert failed, "at least one kill landed mid-trial"
    assert all(t.reason.startswith("worker lost") for t in failed)
    frozen = {ft.number: ft for ft in study.optuna_study.trials}
    retried_from = {ft.user_attrs.get("retry_of") for ft in frozen.values()}
    for t in failed:
        if t.config is None:
            # killed between asking for the trial and sampling its config: nothing was measured,
            # and there is no config to queue again
            assert t.reason == "worker lost: its trial was never claimed", t.reason
            continue
        if int(frozen[t.number].user_attrs.get("retries", 0)) >= MAX_RETRIES:
            # the kills hit this config's every try (under load, often the baseline's, which
            # the other workers wait on): it is not queued a fourth time, and the study goes on
            assert t.number not in retried_from
            continue
        assert t.number in retried_from, f"trial {t.number}'s config was re-queued"
        retry = next(ft for ft in frozen.values() if ft.user_attrs.get("retry_of") == t.number)
        assert retry.params == frozen[t.number].params
    # completed trials are exactly the measured ones
    assert lost(study) == 0
    recovery = []
    for t in failed:
        reaped_at = frozen[t.number].user_attrs["reaped_at"]
        kill_at = max(k for k, _ in kills if k <= reaped_at)
        recovery.append(reaped_at - kill_at)
    record_figure(fault="SIGKILL a worker mid-trial (2 workers, 40 trials, grace 2 s)", injected=len(kills),
                  trials_hit=len(failed), survived=counts["COMPLETE"] == 40, lost=lost(study),
                  recovery_s=recovery)


@pytest.mark.postgres
def test_postgres_stopped_for_five_seconds_mid_study(pg_cluster, pg_url: str) -> None:
    study = pt.create_study("outage", pg_url, space=SPACE, objectives=OBJ, sampler="random", seed=6)
    thread, errors = run_in_thread(study.optimize, helpers_eval.quick, n_trials=30, n_workers=2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pt.load_study("outage", pg_url).counts()["COMPLETE"] < 5:
        time.sleep(0.2)
    pg_cluster.stop("fast")
    time.sleep(5)
    pg_cluster.start()
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors
    study = pt.load_study("outage", pg_url)
    assert study.counts()["COMPLETE"] == 30 and study.counts()["RUNNING"] == 0
    assert lost(study) == 0
    record_figure(fault="PostgreSQL stopped for 5 s mid-study (2 workers, 30 trials)", injected=1,
                  survived=True, lost=lost(study), failed_trials=study.counts()["FAIL"])


def test_killed_controller_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ctl.db"
    spec = tmp_path / "ctl.yaml"
    spec.write_text(textwrap.dedent(
        """\
        name: ctl
        task: helpers_eval:slow
        space: {dimensions: {x: {type: float, low: 0.0, high: 1.0, step: 0.01, default: 0.0}}}
        objectives: {latency_p50_ms: min, accuracy: max}
        sampler: random
        seed: 1
        worker_grace_s: 2
        budget: {n_trials: 20, n_workers: 2}
        """
    ))
    cmd = [sys.executable, "-m", "paretotune.cli", "run", str(spec), "--storage", url, "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    helpers_eval.wait_for_completed("ctl", url, 6, timeout_s=90)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = pt.load_study("ctl", url)
    done_before = {t.number: t.config for t in before.completed()}
    time.sleep(2)  # the orphaned workers notice their controller is gone and exit
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr
    after = pt.load_study("ctl", url)
    counts = after.counts()
    assert counts["COMPLETE"] == 20 and counts["RUNNING"] == 0, counts
    # a retry queued while the budget filled up stays queued for a later, larger budget
    waiting = [ft for ft in after.optuna_study.trials if ft.state.name == "WAITING"]
    assert all("retry_of" in ft.user_attrs for ft in waiting), counts
    numbers = [t.number for t in after.trials]
    assert len(numbers) == len(set(numbers))
    for number, config in done_before.items():  # nothing completed was lost or changed
        assert after.trial(number).state == pt.TrialState.COMPLETE and after.trial(number).config == config
    assert all(t.reason.startswith("worker lost") for t in after.trials if t.state == pt.TrialState.FAIL)
    assert {m["trial_number"] for m in after.store.measurements("ctl")} >= {t.number for t in after.completed()}
    record_figure(fault="SIGKILL the controller, then run the spec again (20 trials)", injected=1,
                  survived=True, lost=sum(1 for n in done_before if after.trial(n).state != pt.TrialState.COMPLETE),
                  reaped=counts["FAIL"])


@pytest.mark.postgres
def test_eight_workers_stay_inside_the_connection_bound(pg_cluster, pg_url: str, capfd) -> None:
    from paretotune.storage.engine import MAX_CONNECTIONS_PER_PROCESS

    study = pt.create_study("eight", pg_url, space=SPACE, objectives=OBJ, sampler="random", seed=8)
    peak = 0
    stop = threading.Event()
    db = pg_url.rsplit("/", 1)[1]

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, pg_cluster.connection_count(database=db))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        study.optimize(null_evaluator, n_trials=160, n_workers=8)
    finally:
        stop.set()
        watcher.join()
    out = capfd.readouterr()
    assert "already finished" not in out.out + out.err
    counts = pt.load_study("eight", pg_url).counts()
    assert counts["COMPLETE"] == 160 and counts["FAIL"] == 0, budget_diagnosis(pt.load_study("eight", pg_url))
    bound = MAX_CONNECTIONS_PER_PROCESS * (8 + 1)
    assert 0 < peak <= bound, (peak, bound)
    record_figure(fault="8 workers x 20 trials on one PostgreSQL", injected=0, survived=True,
                  lost=lost(pt.load_study("eight", pg_url)), peak_connections=peak, connection_bound=bound)


@pytest.mark.postgres
def test_measurement_taken_while_the_store_is_down_is_spooled_then_delivered(
    pg_cluster, pg_url: str, tmp_path: Path, monkeypatch
) -> None:
    from paretotune.workers import run_worker

    monkeypatch.setenv("PARETOTUNE_SPOOL_DIR", str(tmp_path / "spool"))
    study = pt.create_study("spool", pg_url, space=SPACE, objectives=OBJ, sampler="random", seed=9,
                            worker_grace_s=2)
    study.store.set_target("spool", 3)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            run_worker(pg_url, "spool", helpers_eval.two_seconds, n_trials=3, retry_window_s=2.0)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not pt.load_study("spool", pg_url).counts()["RUNNING"]:
        time.sleep(0.05)
    running = [x.number for x in pt.load_study("spool", pg_url).trials if x.state == pt.TrialState.RUNNING]
    pg_cluster.stop("fast")  # the trial finishes while the store is down, and stays down past the window
    t.join(timeout=60)
    try:
        assert errors and isinstance(errors[0], pt.StorageError) and "kept in" in str(errors[0])
        spooled = list((tmp_path / "spool").glob("*.jsonl"))
        assert spooled and str(running[0]) in spooled[0].read_text()
    finally:
        pg_cluster.start()
    # the next worker for the study on this machine delivers it before doing anything else
    run_worker(pg_url, "spool", helpers_eval.quick, n_trials=3)
    rows = {m["trial_number"]: m for m in pt.load_study("spool", pg_url).store.measurements("spool")}
    assert running[0] in rows and rows[running[0]]["metrics"]["accuracy"] == 0.5
    assert not list((tmp_path / "spool").glob("*.jsonl"))
