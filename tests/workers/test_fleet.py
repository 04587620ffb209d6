"""The fleet: workers serving every submitted study of a store, on SQLite and the real PostgreSQL.

Workers run in threads of this process (each with its own trial process), on the fake
evaluator; assertions are on counts and order of claims, never on times.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

import paretotune as pt
from paretotune.cli import _fleet_rows, main
from paretotune.storage import FleetState, StudyStore
from paretotune.storage.store import claims_table
from paretotune.workers.fleet import FAIR_SHARE_SLACK, FleetWorker, rank, study_requirements, submit
from paretotune.workers.reaper import UNCLAIMED_REASON

from helpers_eval import flaky_ask

SPACE = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.1, default=0.0)})
OBJ = {"latency_p50_ms": "min", "accuracy": "max"}


def _study(url: str, name: str, *, evaluator: str = "paretotune.testing:fake_evaluator",
           space: pt.SearchSpace = SPACE) -> pt.Study:
    return pt.create_study(name, url, space=space, objectives=OBJ, task=evaluator, sampler="random", seed=1,
                           warm_start="none")


def _claim_order(url: str) -> list[str]:
    store = StudyStore(url)
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(claims_table.c.study).order_by(claims_table.c.id))]


def test_priority_first_then_fair_share(storage_url: str) -> None:
    high, low = _study(storage_url, "high"), _study(storage_url, "low")
    submit(low, priority=1, n_trials=3)
    submit(high, priority=5, n_trials=3)
    stats = FleetWorker(storage_url).run(exit_when_idle_s=0.5)
    order = _claim_order(storage_url)
    assert order == ["high"] * 3 + ["low"] * 3  # every claim of the higher priority first
    assert stats.by_study == {"high": {"COMPLETE": 3}, "low": {"COMPLETE": 3}}
    rows = {r["name"]: r for r in StudyStore(storage_url).fleet_studies()}
    assert rows["high"]["state"] == rows["low"]["state"] == FleetState.DONE

    a, b = _study(storage_url, "a"), _study(storage_url, "b")
    submit(a, priority=2, n_trials=4)
    submit(b, priority=2, n_trials=4)
    FleetWorker(storage_url).run(exit_when_idle_s=0.5)
    shared = [s for s in _claim_order(storage_url) if s in ("a", "b")]
    assert sorted(shared) == ["a"] * 4 + ["b"] * 4
    for i in range(1, len(shared) + 1):  # equal priorities take turns, FAIR_SHARE_SLACK apart at most
        assert abs(shared[:i].count("a") - shared[:i].count("b")) <= FAIR_SHARE_SLACK + 1, shared
    assert "a" in shared[:FAIR_SHARE_SLACK + 2] and "b" in shared[:FAIR_SHARE_SLACK + 2]


def test_two_workers_serve_two_studies_without_loss_or_excess(storage_url: str) -> None:
    for name in ("one", "two"):
        submit(_study(storage_url, name, evaluator="paretotune.testing:slow_fake_evaluator"), n_trials=4)
    workers = [FleetWorker(storage_url) for _ in range(2)]
    threads = [threading.Thread(target=w.run, kwargs={"exit_when_idle_s": 1.0}) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    for name in ("one", "two"):
        study = pt.load_study(name, storage_url)
        assert study.counts()["COMPLETE"] == 4 and study.counts()["RUNNING"] == 0
        assert StudyStore(storage_url).claim_counts(name) == {"active": 0, "done": 4, "released": 0}
    assert all(w.stats.total(pt.TrialState.COMPLETE) > 0 for w in workers)  # both did work
    assert sum(w.stats.total(pt.TrialState.COMPLETE) for w in workers) == 8


def test_a_cancelled_study_gets_no_new_trials_and_keeps_the_running_one(storage_url: str) -> None:
    study = _study(storage_url, "cancel-me", evaluator="paretotune.testing:slow_fake_evaluator")
    submit(study, n_trials=30)
    worker, stop = FleetWorker(storage_url), threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while StudyStore(storage_url).claim_counts("cancel-me")["done"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main(["cancel", "cancel-me", "--storage", storage_url]) == 0
        cancelled_at = StudyStore(storage_url).claim_counts("cancel-me")
        time.sleep(1.5)  # several claim rounds of an idle worker
    finally:
        stop.set()
        thread.join(timeout=60)
    after = StudyStore(storage_url).claim_counts("cancel-me")
    # at most the trial running at the cancel was still taken; it finished and was recorded
    assert after["active"] == 0
    assert after["done"] + after["released"] <= cancelled_at["done"] + cancelled_at["released"] + cancelled_at["active"]
    counts = pt.load_study("cancel-me", storage_url).counts()
    assert counts["COMPLETE"] == after["done"] < 30 and counts["RUNNING"] == 0
    assert StudyStore(storage_url).fleet_studies()[0]["state"] == FleetState.CANCELLED


def test_a_gpu_study_is_never_claimed_by_a_cpu_worker(storage_url: str) -> None:
    gpu_study, cpu_study = _study(storage_url, "needs-gpu"), _study(storage_url, "cpu-ok")
    assert submit(gpu_study, priority=9, n_trials=3, gpu=True)["gpu"] is True
    submit(cpu_study, priority=1, n_trials=2)
    worker = FleetWorker(storage_url)
    worker.capabilities["gpus"] = []  # this worker has none, even on a machine with a GPU
    worker.run(exit_when_idle_s=0.5)
    assert StudyStore(storage_url).claim_counts("needs-gpu") == {"active": 0, "done": 0, "released": 0}
    assert StudyStore(storage_url).claim_counts("cpu-ok")["done"] == 2
    _, rows = _fleet_rows(StudyStore(storage_url))
    note = {r["study"]: r["note"] for r in rows}
    assert note["needs-gpu"] == "waits for a worker with a GPU"


def test_what_a_study_needs_comes_from_its_space() -> None:
    space = pt.SearchSpace({"engine": pt.Choice(["onnxruntime", "tensorrt"]), "batch_size": pt.Int(1, 8)})

    class _S:
        pass

    study = _S()
    study.space = space  # type: ignore[attr-defined]
    needs = study_requirements(study, tags=["fast-disk"])  # type: ignore[arg-type]
    assert needs == {"engines": ["onnxruntime", "tensorrt"], "gpu": True, "tags": ["fast-disk"]}
    rows = [{"name": "s", "state": FleetState.OPEN, "priority": 1, "running": 0, "done": 0, "submitted_at": 0.0,
             "requires": needs}]
    cpu = {"engines": ["torch", "onnxruntime"], "gpus": [], "tags": ["fast-disk"]}
    gpu = {"engines": ["torch", "onnxruntime", "tensorrt"], "gpus": ["NVIDIA H200"], "tags": ["fast-disk"]}
    assert rank(rows, cpu) == [] and [r["name"] for r in rank(rows, gpu)] == ["s"]
    assert rank(rows, {**gpu, "tags": []}) == []


def test_a_warm_study_keeps_the_worker_within_the_slack() -> None:
    caps = {"engines": [], "gpus": [], "tags": []}

    def row(name: str, done: int, priority: int = 1) -> dict:
        return {"name": name, "state": FleetState.OPEN, "priority": priority, "running": 0, "done": done,
                "submitted_at": 0.0, "requires": {}}

    names = lambda rows, warm: [r["name"] for r in rank(rows, caps, warm)]  # noqa: E731
    assert names([row("a", 3), row("b", 1)], []) == ["b", "a"]  # fewest taken first
    assert names([row("a", 3), row("b", 1)], ["a"]) == ["a", "b"]  # warm, 2 ahead: stays
    assert names([row("a", 4), row("b", 1)], ["a"]) == ["b", "a"]  # 3 ahead: switches
    assert names([row("a", 3), row("b", 1, priority=2)], ["a"]) == ["b", "a"]  # never over priority


def test_the_metrics_endpoint_counts_what_ls_counts(storage_url: str) -> None:
    space = pt.SearchSpace({"x": pt.Float(0.0, 1.0, step=0.5, default=0.0), "mode": pt.Choice(["ok", "raise"])})
    submit(_study(storage_url, "metered", space=space), n_trials=3)
    worker, stop = FleetWorker(storage_url, metrics_port=0), threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = StudyStore(storage_url).fleet_studies()[0]
            if row["state"] == FleetState.DONE and row["running"] == 0:
                break
            time.sleep(0.1)
        assert worker.metrics is not None
        text = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics.port}/metrics", timeout=10).read().decode()
    finally:
        stop.set()
        thread.join(timeout=60)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    _, rows = _fleet_rows(StudyStore(storage_url))
    (listed,) = rows
    for state, column in (("COMPLETE", "completed"), ("FAIL", "failed")):
        counted = samples.get(("paretotune_trials_total", (("state", state), ("study", "metered"))), 0.0)
        assert counted == listed[column], (state, text)
    assert listed["completed"] == 3
    # trials the worker ran (a config refused at ask as INVALID is never run, so not timed)
    assert samples[("paretotune_trial_duration_seconds_count", (("study", "metered"),))] == (
        listed["completed"] + listed["failed"])


def test_a_bad_submission_is_refused_before_anything_is_stored(storage_url: str, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ntask: paretotune.testing:fake_evaluator\nspace: {dimensions: {x: {type: float, "
                    "low: 0.0, high: 1.0}}}\nobjectives: {accuracy: max}\nsampler: tpee\nbudget: {n_trials: 3}\n")
    with pytest.raises(pt.ConfigError, match=r"sampler: unknown name 'tpee'; valid samplers: \["):
        pt.submit(spec, storage_url)
    good = spec.read_text().replace("tpee", "random")
    spec.write_text(good)
    with pytest.raises(pt.ConfigError, match="priority must be an integer from 0 to 1000, got 5000"):
        pt.submit(spec, storage_url, priority=5000)
    assert StudyStore(storage_url).study_names() == []
    assert main(["submit", str(spec), "--storage", storage_url, "--priority", "3"]) == 0
    assert main(["priority", "bad", "7", "--storage", storage_url]) == 0
    (row,) = StudyStore(storage_url).fleet_studies()
    assert (row["name"], row["priority"], row["target"], row["state"]) == ("bad", 7, 3, FleetState.OPEN)
    assert main(["priority", "nope", "2", "--storage", storage_url]) == 1  # never submitted: one line
    assert main(["wait", "bad", "--storage", storage_url, "--timeout", "0"]) == 1  # no worker yet
    capsys.readouterr()
    assert main(["ls", "--storage", storage_url, "--format", "json"]) == 0
    (listed,) = __import__("json").loads(capsys.readouterr().out)
    assert listed == {"study": "bad", "state": "open", "priority": 7, "completed": 0, "budget": 3, "running": 0,
                      "failed": 0, "invalid": 0, "note": "waits for a worker"}
    assert main(["worker", "--storage", storage_url, "--exit-when-idle", "3", "--tag", "t1"]) == 0
    assert main(["workers", "--storage", storage_url, "--format", "json"]) == 0  # it retired on exit
    assert __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1] or "[]") == []
    assert main(["wait", "bad", "--storage", storage_url, "--format", "json"]) == 0
    assert main(["worker", "--storage", storage_url, "--study", "bad", "--tag", "x"]) == 2  # fleet-only flag


def test_a_worker_that_cannot_load_a_task_leaves_the_study_to_others(storage_url: str) -> None:
    broken = _study(storage_url, "broken-here")
    broken.store.engine.dispose()
    submit(broken, n_trials=2)
    store = StudyStore(storage_url)
    spec = store.load_spec("broken-here")
    with store.engine.begin() as conn:  # a task path this worker's environment cannot import
        conn.execute(sa.text("UPDATE pt_studies SET spec = :spec WHERE name = 'broken-here'"),
                     {"spec": __import__("json").dumps({**spec, "task": "no_such_module_here:task"})})
    submit(_study(storage_url, "fine"), n_trials=2)
    worker = FleetWorker(storage_url)
    worker.run(exit_when_idle_s=0.5)
    assert "no_such_module_here" in worker.cannot["broken-here"]
    assert StudyStore(storage_url).claim_counts("broken-here") == {"active": 0, "done": 0, "released": 0}
    assert pt.load_study("broken-here", storage_url).counts()["FAIL"] == 0  # not failed for this worker's sake
    assert StudyStore(storage_url).claim_counts("fine")["done"] == 2


def test_a_trial_orphaned_by_a_failed_ask_is_not_left_running(storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _study(storage_url, "orphan")
    submit(study, n_trials=3)
    asked = flaky_ask(monkeypatch, fail_on_call=2)  # the baseline passes, the next ask is cut
    stats = FleetWorker(storage_url).run(exit_when_idle_s=0.5)
    assert stats.by_study == {"orphan": {"COMPLETE": 3}}
    counts = pt.load_study("orphan", storage_url).counts()
    assert counts["COMPLETE"] == 3 and counts["RUNNING"] == 0 and counts["FAIL"] == 1, counts
    orphan = pt.load_study("orphan", storage_url).trial(asked[1])
    assert orphan.state == pt.TrialState.FAIL and orphan.reason == UNCLAIMED_REASON
    assert StudyStore(storage_url).fleet_studies()[0]["state"] == FleetState.DONE
