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


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value (scipy.stats.mannwhitneyu), None with under 2 values
    a side or no variation at all (nothing to rank)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return None
    if np.all(np.concatenate([x, y]) == x[0]):
        return 1.0
    return float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
