"""Statistics over fresh processes: intervals for a median of a few values, and the A/B test.

The unit of evidence is the process: calls inside one process share its luck (its core, its
memory placement, the tenant beside it), so only fresh processes give independent values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the confidence level intervals over processes aim at
LEVEL = 0.95


def order_statistic_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float] | None:
    """The distribution-free interval for the median of a few values (one per fresh process):
    the narrowest symmetric pair of order statistics whose coverage is at least `level`, or
    the widest (min, max) when even that covers less. Returns (low, high, its exact
    coverage): with 5 processes (min, max) covers 93.75%, never 95%, and says so."""
    from scipy import stats

    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n < 2:
        return None
    best = (xs[0], xs[-1], float(1 - 2 * stats.binom.cdf(0, n, 0.5)))
    for k in range(1, n // 2):  # the interval (x_(k+1), x_(n-k)) in 1-based order statistics
        coverage = float(1 - 2 * stats.binom.cdf(k, n, 0.5))
        if coverage < level:
            break
        best = (xs[k], xs[n - k - 1], coverage)
    return best


def process_ratio_p(ratios: Sequence[float]) -> float | None:
    """Two-sided p-value that the per-process ratios a / b (one per fresh process, each from
    that process's interleaved windows) centre on 1: a one-sample t-test of their logs
    (scipy.stats.ttest_1samp), so the process is the unit and the spread between processes is
    the noise. None with under 2 ratios; 1.0 or 0.0 when they do not vary at all.

    A test that pools the windows of every process instead counts each process's own luck (the
    two sides' offset inside it) as many independent observations: it called a config 2.8%
    faster than itself at p = 0.034 on a loaded machine, every process's windows agreeing."""
    from scipy import stats

    logs = np.log(np.asarray(ratios, dtype=float))
    if logs.size < 2:
        return None
    if np.all(logs == logs[0]):
        return 1.0 if logs[0] == 0 else 0.0
    return float(stats.ttest_1samp(logs, 0.0).pvalue)
