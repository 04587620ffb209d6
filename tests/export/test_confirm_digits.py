"""`Study.confirm` on the real digits study: the cached artifacts re-timed in fresh processes."""

from __future__ import annotations

import json

from conftest import FAST, TASK, Recorded

from paretotune.evaluators import TaskEvaluator, load_task


def test_confirm_retimes_real_trials_in_fresh_processes_from_the_cache(digits_study: Recorded) -> None:
    study = digits_study.study
    evaluator = TaskEvaluator(load_task(TASK), cache_dir=digits_study.cache_dir, timing=FAST)
    results = {c.trial: c for c in study.confirm([0, 1], evaluator=evaluator, processes=2, show_progress=False)}
    rows = [r for r in study.store.confirmation_rows(study.name) if r["run_id"] == results[0].run_id]
    # trial 0 (the baseline, batch 1), trial 1 (ORT static int8, batch 8), the baseline at batch 8
    assert len(rows) == 6 and all(r["error"] is None for r in rows)
    assert all(r["details"]["cache_hit"] for r in rows)  # re-timed, not rebuilt
    for c in results.values():
        assert c.processes == 2 and not c.errors
        # the same artifact gives the same untimed accuracy pass in every process
        assert c.metrics["accuracy"] == c.recorded["accuracy"]
        assert c.metrics["latency_p50_ms"] > 0 and c.spread["latency_p50_ms"] >= 0
        assert {"stable", "spread"} <= set(rows[0]["details"])
    assert results[0].speedup == 1.0
    assert results[1].speedup is not None and results[1].speedup > 0
    base8 = [r for r in rows if r["details"]["role"] == "reference"]
    assert len(base8) == 2 and all(json.loads(r["config"])["batch_size"] == 8 for r in base8)


def test_an_exported_bundle_carries_the_trials_latest_confirmation(digits_study: Recorded, tmp_path) -> None:
    import paretotune as pt

    study = digits_study.study
    evaluator = TaskEvaluator(load_task(TASK), cache_dir=digits_study.cache_dir, timing=FAST)
    (confirmed,) = study.confirm([2], evaluator=evaluator, processes=2, show_progress=False)
    bundle = pt.export(study, 2, tmp_path / "bundle", cache_dir=digits_study.cache_dir)
    measurements = json.loads((bundle.path / "measurements.json").read_text())
    assert measurements["confirmation"] == json.loads(json.dumps(confirmed.to_dict()))
    readme = (bundle.path / "README.md").read_text()
    assert "Confirmed in 2 fresh processes: p50" in readme
    # a trial never confirmed says so in its README
    from paretotune.export.manifest import confirmation_line as _confirmation_line

    assert _confirmation_line(None).startswith("Not confirmed")
