"""Queueing models the serving harness is checked against, written independently of it.

- Erlang's exact M/D/1 waiting-time distribution (Decimal arithmetic: the alternating sum
  cancels badly in floats), to anchor the simulations to theory;
- a Lindley-recursion M/D/1 and a discrete-event simulation of a Triton-style dynamic batcher,
  both fed the arrival times LoadGen actually issued (or fresh Poisson ones);
- LoadGen's own verdict on a Server run: p99 within the bound, and its early-stopping test
  (loadgen/early_stopping.cc: with t queries over the bound, the run needs at least h + t
  queries, h the least such that P(Binomial(h + t, 0.01) <= t) <= 0.01).

A run of ~1,000 queries is judged on its largest busy periods, so the QPS at which one Poisson
realization turns INVALID varies by tens of percent from one realization to the next. Hence the
tests compare the harness with the model on the same realization (LoadGen's schedule is seeded
and scales with the target QPS), and with the spread over fresh realizations.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from decimal import Decimal, getcontext
from functools import cache

Sojourns = Callable[[Sequence[float], float], list[float]]  # (unit arrivals, qps) -> latencies


def _binom_cdf(t: int, n: int, p: float) -> float:
    log_p, log_q = math.log(p), math.log1p(-p)
    lg = math.lgamma
    return sum(
        math.exp(lg(n + 1) - lg(k + 1) - lg(n - k + 1) + k * log_p + (n - k) * log_q)
        for k in range(t + 1)
    )


@cache
def early_stopping_h(t: int) -> int:
    """LoadGen's h for t overlatency queries: a Server run passes with >= h + t queries."""
    lo, hi = 1, 512
    while _binom_cdf(t, hi + t, 0.01) > 0.01:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if _binom_cdf(t, mid + t, 0.01) <= 0.01:
            hi = mid
        else:
            lo = mid + 1
    return lo


def loadgen_valid(latencies: Sequence[float], bound: float) -> bool:
    """LoadGen's verdict on a Server run with these latencies (min duration and count met)."""
    ordered = sorted(latencies)
    n = len(ordered)
    if ordered[int(n * 0.99)] > bound:
        return False
    over = n - next((i for i, x in enumerate(ordered) if x > bound), n)
    return n >= early_stopping_h(over) + over


def md1_wait_cdf(t: float, lam: float, d: float) -> float:
    """P(W <= t) for M/D/1 FCFS (Erlang 1909): (1 - rho) sum_k (lam(kD - t))^k / k! e^{-lam(kD - t)}."""
    getcontext().prec = 60
    lam_d, d_d, t_d = Decimal(lam), Decimal(d), Decimal(t)
    total = Decimal(0)
    for k in range(int(t / d) + 1):
        x = lam_d * (k * d_d - t_d)
        total += x**k / math.factorial(k) * (-x).exp()
    return float((1 - lam_d * d_d) * total)


def md1_qps_at_p99(bound: float, d: float) -> float:
    """The arrival rate at which the exact M/D/1 sojourn time's p99 equals `bound`."""
    lo, hi = 1e-9, (1 - 1e-9) / d
    for _ in range(80):
        mid = (lo + hi) / 2
        if 1 - md1_wait_cdf(bound - d, mid, d) > 0.01:
            hi = mid
        else:
            lo = mid
    return lo


def md1(d: float) -> Sojourns:
    """Lindley's recursion: one server, FIFO, service d; latencies of arrivals unit/qps."""

    def sojourns(unit: Sequence[float], qps: float) -> list[float]:
        out, free = [], 0.0
        for u in unit:
            arrival = u / qps
            start = max(arrival, free)
            free = start + d
            out.append(free - arrival)
        return out

    return sojourns


def batcher(
    service: Callable[[int], float],
    max_batch_size: int,
    preferred: Sequence[int],
    delay: float,
) -> Sojourns:
    """One instance behind Triton's rule: run the largest preferred size the queue fills, else
    what is queued once the oldest has waited `delay` (no preferred sizes: max_batch_size)."""
    targets = sorted(preferred) or [max_batch_size]

    def sojourns(unit: Sequence[float], qps: float) -> list[float]:
        arrivals = [u / qps for u in unit]
        n = len(arrivals)
        out = [0.0] * n
        head, free = 0, 0.0  # head: the oldest request not yet served
        while head < n:
            now = max(free, arrivals[head])
            while True:
                queued = sum(
                    1 for i in range(head, min(n, head + max_batch_size)) if arrivals[i] <= now
                )
                fits = [t for t in targets if t <= queued]
                if fits:
                    size = fits[-1]
                    break
                deadline = arrivals[head] + delay
                if now >= deadline:
                    size = queued
                    break
                upcoming = head + queued
                now = min(deadline, arrivals[upcoming]) if upcoming < n else deadline
            done = now + service(size)
            for i in range(head, head + size):
                out[i] = done - arrivals[i]
            head += size
            free = done
        return out

    return sojourns


def queries_issued(unit: Sequence[float], qps: float, min_duration: float, min_queries: int) -> int:
    """How many queries LoadGen schedules: until both the minimum duration and count are met."""
    for i, u in enumerate(unit):
        if u / qps >= min_duration and i + 1 >= min_queries:
            return i + 1
    raise ValueError(f"the schedule of {len(unit)} arrivals is too short at {qps:.1f} QPS")


def critical_qps(
    model: Sojourns,
    unit: Sequence[float],
    bound: float,
    *,
    min_duration: float,
    min_queries: int,
    lo: float,
    hi: float,
) -> float:
    """The highest QPS at which LoadGen would judge this schedule VALID under `model` (0.5%)."""
    longest = len(unit) / (min_duration * 1.02)
    hi = min(hi, longest)
    for _ in range(40):
        if hi / lo < 1.005:
            break
        mid = math.sqrt(lo * hi)
        n = queries_issued(unit, mid, min_duration, min_queries)
        if loadgen_valid(model(unit[:n], mid), bound):
            lo = mid
        else:
            hi = mid
    return lo


def poisson_unit(n: int, seed: int) -> list[float]:
    """Arrival times of a unit-rate Poisson process (first at 0, as we record LoadGen's)."""
    rng = random.Random(seed)
    out, t = [0.0], 0.0
    for _ in range(n - 1):
        t += rng.expovariate(1.0)
        out.append(t)
    return out


def quantiles(values: Sequence[float], qs: Sequence[float]) -> list[float]:
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs]
