"""The A/B verdict's statistics (`search.comparisons`), on seeded synthetic processes: how often
it calls a difference that is not there, and whether it finds one that is. No timing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from paretotune.search.comparisons import ALPHA, summarize

STUDY = SimpleNamespace(name="ab", objectives={"latency_p50_ms": "min"}, spec={}, trials=[])


def _rows(rng: np.random.Generator, processes: int, effect: float, *, between: float = 0.02,
          within: float = 0.005, windows: int = 3) -> list[dict]:
    """One comparison's stored rows. Each fresh process has its own level (the machine it got)
    and its own offset between the two sides (`between`, in log: how one process's luck favours
    one side), and each window its own noise (`within`); `effect` is the true log ratio a / b."""
    rows = []
    for k in range(processes):
        level, offset = rng.normal(0, 0.1), rng.normal(0, between)
        for role, shift in (("compare_a", effect + offset / 2), ("compare_b", -offset / 2)):
            w = 2.0 * np.exp(level + shift + rng.normal(0, within, windows))
            rows.append({"process": k, "run_id": "r", "error": None,
                         "metrics": {"latency_p50_ms": float(np.median(w))},
                         "details": {"role": role, "pair": [1, 2], "n_samples": 100,
                                     "windows": {"latency_p50_ms": w.tolist()}}})
    return rows


def test_a_config_against_itself_is_called_different_no_more_often_than_alpha() -> None:
    # the process is the unit: with 3 processes a test pooling their windows called a difference
    # in 21% of these runs (each process's offset counted as 3 independent windows); CI saw one
    rng = np.random.default_rng(0)
    runs = 400
    called = sum(summarize(STUDY, _rows(rng, 3, 0.0)).verdict("latency_p50_ms").significant for _ in range(runs))
    assert called / runs <= ALPHA + 0.02, called  # 4.75% with this seed; the binomial sd is 1.1%


def test_a_30_percent_slower_config_is_found_slower_every_time() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        verdict = summarize(STUDY, _rows(rng, 5, math.log(1.3))).verdict("latency_p50_ms")
        assert verdict.significant and verdict.p_value is not None and verdict.p_value < 0.01, verdict.line
        assert verdict.line.startswith("trial 1 is ") and " slower than trial 2 at p50" in verdict.line
        assert "t-test over processes p = " in verdict.line
