"""`Study.compare`: an A/B verdict from two trials measured side by side in fresh processes,
on a fake engine that waits a known time (the real timing harness measures it)."""

from __future__ import annotations

import pytest

import paretotune as pt
from paretotune.cli import main as cli_main
from paretotune.evaluators.timing import TimingPolicy
from paretotune.testing import SleepEvaluator

SPACE = pt.SearchSpace({"x": pt.Choice([0.0, 0.3, 1.0])})
#: a fake engine of 2 ms (x = 0) to 2.6 ms (x = 0.3), short windows: a relation, never a time
FAKE = SleepEvaluator(base_ms=2.0, timing=TimingPolicy(
    warmup_iters=2, min_window_iters=5, min_window_ms=15.0, stable_windows=3, max_windows=3))


def _study(url: str) -> pt.Study:
    """Trials 0 (the baseline, x = 0), 1 and 2 (both x = 0.3: one config measured twice), 3 FAIL."""
    study = pt.create_study("ab", url, space=SPACE, warm_start="none", task="paretotune.testing:sleep_evaluator",
                            objectives={"latency_p50_ms": "min", "accuracy": "max", "speedup": "max"})
    study.enqueue({"x": 0.3})
    study.enqueue({"x": 0.3})
    for _ in range(3):
        pending = study.ask()
        m = FAKE(pending.config)
        study.tell(pending, m.metrics, m.details)
    study.enqueue({"x": 1.0})
    study.tell_failure(study.ask(), "broken on purpose")
    return study


def test_a_config_against_itself_is_no_significant_difference_and_30_percent_slower_is_slower(tmp_path) -> None:
    study = _study(f"sqlite:///{tmp_path}/ab.db")
    same = study.compare(1, 2, evaluator=FAKE, processes=3, show_progress=False)
    assert same.processes == 3 and not same.errors and same.calls > 0
    for metric in ("latency_p50_ms", "speedup"):
        verdict = same.verdict(metric)
        assert not verdict.significant and verdict.line.startswith("no significant difference"), verdict.line
    assert same.verdict("accuracy").line.startswith("trial 1 and trial 2 are equal at resolution 1e-06")

    slower = study.compare(1, 0, evaluator=FAKE, show_progress=False)  # default: 5 processes
    p50 = slower.verdict("latency_p50_ms")
    assert slower.processes == 5 and p50.significant
    assert p50.p_value is not None and p50.p_value < 0.01
    assert p50.ratio == pytest.approx(1.3, rel=0.05)
    assert p50.line.startswith("trial 1 is 3") and " slower than trial 0 at p50 (93.8% CI " in p50.line
    assert "t-test over processes p = " in p50.line and "5 processes × " in p50.line
    assert slower.verdict("speedup").line.startswith("trial 1 has a ") and " lower speedup than trial 0" in slower.verdict("speedup").line
    assert "(worse)" in slower.verdict("accuracy").line
    # stored beside the confirmations, and not mistaken for one
    assert [c.run_id for c in study.comparisons()] == [same.run_id, slower.run_id]
    assert study.comparisons(slower.run_id)[0].lines() == slower.lines()
    assert study.confirmations() == []


def test_compare_rejects_bad_input(tmp_path) -> None:
    study = _study(f"sqlite:///{tmp_path}/ab.db")
    with pytest.raises(pt.ConfigError, match=r"b: trial 1 is also a; compare two different trials"):
        study.compare(1, 1, evaluator=FAKE)
    with pytest.raises(pt.ConfigError, match=r"b: trial 3 of study 'ab' is FAIL; only COMPLETE trials"):
        study.compare(1, 3, evaluator=FAKE)
    with pytest.raises(pt.ConfigError, match=r"a: 9 is not a trial number of study 'ab' \(it has trials 0..3\)"):
        study.compare(9, 1, evaluator=FAKE)
    for bad in (1, 0, True, 2.5):
        with pytest.raises(pt.ConfigError, match=r"processes must be an integer >= 2 .*got " + repr(bad)):
            study.compare(0, 1, evaluator=FAKE, processes=bad)
    assert study.comparisons() == []  # nothing was measured


def test_cli_compare_prints_one_line_per_metric(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/ab.db"
    _study(url)
    assert cli_main(["compare", "ab", "1", "0", "--storage", url, "--processes", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "latency_p50_ms: " in out and "accuracy: " in out and "speedup: " in out
    assert cli_main(["compare", "ab", "1", "1", "--storage", url]) == 2
    assert "compare two different trials" in capsys.readouterr().err
