"""The A/B verdict's statistics (`search.comparisons`), on seeded synthetic processes
(`paretotune.testing.comparison_rows`): how often it calls a difference that is not there, and
whether it finds one that is. No timing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from paretotune.search.comparisons import ALPHA, summarize
from paretotune.testing import comparison_rows

STUDY = SimpleNamespace(name="ab", objectives={"latency_p50_ms": "min"}, spec={}, trials=[])


def test_a_config_against_itself_is_called_different_no_more_often_than_alpha() -> None:
    # the process is the unit: with 3 processes, Mann-Whitney over their pooled windows called
    # a difference in 18.5% of these runs (each process's offset counted as 3 independent
    # windows; benchmarks/ab_calibration.py), and once in CI
    rng = np.random.default_rng(0)
    runs = 400
    called = sum(summarize(STUDY, comparison_rows(rng, 3)).verdict("latency_p50_ms").significant
                 for _ in range(runs))
    assert called / runs <= ALPHA + 0.02, called  # 3.75% with this seed; the binomial sd is 1.1%


def test_a_30_percent_slower_config_is_found_slower_every_time() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        verdict = summarize(STUDY, comparison_rows(rng, 5, math.log(1.3))).verdict("latency_p50_ms")
        assert verdict.significant and verdict.p_value is not None and verdict.p_value < 0.01, verdict.line
        assert verdict.line.startswith("trial 1 is ") and " slower than trial 2 at p50" in verdict.line
        assert "t-test over processes p = " in verdict.line
