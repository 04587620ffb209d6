"""How often the A/B verdict (`Study.compare`) calls a difference that is not there, and finds
one that is, on seeded synthetic processes (`paretotune.testing.comparison_rows`). No timing:
a statistical property, reproducible anywhere.

    PYTHONPATH=. .venv/bin/python benchmarks/ab_calibration.py [--runs 400]

For 3 and 5 processes and a few noise levels it prints the false-positive rate of a config
against itself and the power against a 30% slower one, for the verdict as it is (a t-test of
the per-process log ratios) and for the rule before 2026-12-02 (Mann-Whitney U over every
process's windows pooled, after dividing out each process's level), beside the nominal 5%.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
from scipy import stats

from paretotune.search.comparisons import ALPHA, TIMING_RESOLUTION, summarize
from paretotune.testing import comparison_rows

STUDY = SimpleNamespace(name="ab", objectives={"latency_p50_ms": "min"}, spec={}, trials=[])
#: (per-process offset between the sides, per-window noise), log sds
NOISE = ((0.02, 0.005), (0.02, 0.02), (0.005, 0.005))


def pooled_rule(rows: Sequence[Mapping[str, Any]]) -> bool:
    """The verdict before 2026-12-02: Mann-Whitney over the pooled, level-normalized windows,
    with the same agreement rule and 1% floor."""
    a = [r for r in rows if r["details"]["role"] == "compare_a"]
    b = [r for r in rows if r["details"]["role"] == "compare_b"]
    ratios, norm_a, norm_b = [], [], []
    for ra, rb in zip(a, b, strict=True):
        wa, wb = ra["details"]["windows"]["latency_p50_ms"], rb["details"]["windows"]["latency_p50_ms"]
        ratios.append(statistics.median(x / y for x, y in zip(wa, wb, strict=True)))
        level = math.exp(statistics.fmean(math.log(v) for v in wa + wb))
        norm_a += [v / level for v in wa]
        norm_b += [v / level for v in wb]
    p = stats.mannwhitneyu(norm_a, norm_b, alternative="two-sided").pvalue
    ratio = statistics.median(ratios)
    agrees = min(ratios) > 1 or max(ratios) < 1
    return bool(p < ALPHA and agrees and abs(ratio - 1) >= TIMING_RESOLUTION)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="seeded runs per cell (default 400)")
    args = parser.parse_args()
    print(f"nominal alpha {ALPHA:.0%}; {args.runs} seeded runs per cell (binomial sd at 5%: "
          f"{100 * math.sqrt(0.05 * 0.95 / args.runs):.1f} points)\n")
    print("| processes | offset sd | window sd | false positives: now | before | power at 30%: now | before |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for processes in (3, 5):
        for between, within in NOISE:
            rng = np.random.default_rng(0)
            now = before = 0
            for _ in range(args.runs):
                rows = comparison_rows(rng, processes, between=between, within=within)
                now += summarize(STUDY, rows).verdict("latency_p50_ms").significant
                before += pooled_rule(rows)
            rng = np.random.default_rng(1)
            found_now = found_before = 0
            for _ in range(args.runs):
                rows = comparison_rows(rng, processes, math.log(1.3), between=between, within=within)
                found_now += summarize(STUDY, rows).verdict("latency_p50_ms").significant
                found_before += pooled_rule(rows)
            print(f"| {processes} | {between:.1%} | {within:.1%} | {now / args.runs:.2%} | {before / args.runs:.2%} "
                  f"| {found_now / args.runs:.0%} | {found_before / args.runs:.0%} |")


if __name__ == "__main__":
    main()
