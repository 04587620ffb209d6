"""`Study.confirm`: trials re-measured in fresh processes, the baseline beside each, stored as
they finish, summarized as medians, spreads and paired speedups (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import statistics

import pytest

import paretotune as pt
from paretotune.cli import main as cli_main

SPACE = pt.SearchSpace({"x": pt.Choice([0.0, 0.1, 0.2, 0.5]), "batch_size": pt.Choice([1, 2])})


def _study(url: str) -> pt.Study:
    study = pt.create_study(
        "confirm", url, space=SPACE, task="helpers_eval:per_process",
        objectives={"latency_p50_ms": "min", "accuracy": "max"}, sampler="random", seed=0,
        warm_start="none",
    )
    from helpers_eval import per_process

    for config in ({"x": 0.1, "batch_size": 2}, {"x": 0.2, "batch_size": 1}):
        study.enqueue(config)
    for _ in range(3):  # baseline (x=0, batch 1), then the two enqueued
        pending = study.ask()
        study.tell(pending, per_process(pending.config))
    return study


def test_confirm_measures_each_trial_in_fresh_processes_with_paired_baseline(storage_url) -> None:
    study = _study(storage_url)
    results = study.confirm([0, 1, 2], processes=3, show_progress=False)
    assert [c.trial for c in results] == [0, 1, 2]
    rows = study.store.confirmation_rows("confirm")
    # trials 0, 1, 2 and the baseline at batch 2 (trial 1's batch size): 4 configs x 3 processes
    assert len(rows) == 12 and {r["process"] for r in rows} == {0, 1, 2}
    pids = {r["process"]: r["metrics"]["pid"] for r in rows}
    for r in rows:  # one interpreter per process, none of them this one
        assert r["metrics"]["pid"] == pids[r["process"]]
    assert len(set(pids.values())) == 3
    import os

    assert os.getpid() not in pids.values()
    by = {c.trial: c for c in results}
    for c in results:
        p50s = [m["latency_p50_ms"] for m in c.per_process]
        assert c.processes == 3 and c.metrics["latency_p50_ms"] == statistics.median(p50s)
        assert c.spread["latency_p50_ms"] == pytest.approx(max(p50s) / min(p50s) - 1)
        assert c.best_p50_ms == min(p50s)
        # the interval of the median over 3 processes is their range, which covers 75%
        assert c.intervals["latency_p50_ms"] == (min(p50s), max(p50s)) and c.interval_level == 0.75
        assert c.recorded == study.trial(c.trial).metrics
    assert by[0].speedup == 1.0 and by[0].speedup_range == (1.0, 1.0)  # the baseline against itself
    # paired per process: the process factor cancels, leaving (1 + 0) / (1 + x) exactly
    assert by[1].speedup == pytest.approx(1 / 1.1) and by[2].speedup == pytest.approx(1 / 1.2)
    assert study.confirmations()[1].metrics == by[1].metrics  # read back from the store


def test_a_failing_measurement_is_stored_and_the_others_stand(tmp_path) -> None:
    study = _study(f"sqlite:///{tmp_path}/c.db")
    from helpers_eval import per_process

    study.enqueue({"x": 0.0, "batch_size": 2})
    pending = study.ask()
    study.tell(pending, per_process(pending.config))
    # a config that raises: complete it by hand with made-up numbers, then confirm it
    study.enqueue({"x": 0.5, "batch_size": 1})
    pending = study.ask()
    study.tell(pending, {"latency_p50_ms": 1.5, "accuracy": 0.75})
    results = {c.trial: c for c in study.confirm([1, pending.number], processes=2, show_progress=False)}
    assert results[1].processes == 2 and not results[1].errors
    broken = results[pending.number]
    assert broken.processes == 0 and broken.metrics == {} and len(broken.errors) == 2
    assert broken.best_p50_ms is None and broken.speedup is None
    assert all("cannot build x=0.5" in e for e in broken.errors)


def test_confirm_rejects_bad_input(tmp_path) -> None:
    study = _study(f"sqlite:///{tmp_path}/c.db")
    with pytest.raises(pt.ConfigError, match="processes must be an integer >= 1, got 0"):
        study.confirm(processes=0)
    with pytest.raises(pt.ConfigError, match="trials: 99 is not a trial number"):
        study.confirm([99])
    study.enqueue({"x": 0.2, "batch_size": 2})
    running = study.ask()  # handed out, not told
    with pytest.raises(pt.ConfigError, match=f"trial {running.number} .* is RUNNING; only COMPLETE"):
        study.confirm([running.number])
    assert study.confirmations() == []  # nothing was measured


def test_cli_confirm_prints_the_table_and_shows_the_stored_run(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    _study(url)
    assert cli_main(["confirm", "confirm", "--storage", url, "--processes", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "confirmed p50 ms" in out and "p50 spread" in out and "best p50 ms" in out
    assert cli_main(["confirm", "confirm", "--storage", url, "--show", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    front = [t.number for t in pt.load_study("confirm", url).pareto_front()]
    assert [c["trial"] for c in shown] == front and all(c["processes"] == 2 for c in shown)
    assert cli_main(["confirm", "confirm", "--storage", url, "--processes", "0"]) == 2
    assert "processes must be an integer >= 1" in capsys.readouterr().err
