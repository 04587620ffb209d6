"""The harness against queueing theory: a fake engine with a known service time behind LoadGen.

The fake engine waits a + b*n ms (`FakeEngine(busy=False)`: a spin gets preempted on these
shared 2-core machines, which would make its service time unknown). Its effective service time
as LoadGen sees it (engine plus our per-batch cost) is measured in an Offline run and given to
the models. The models then predict the Server scenario, which the harness measures on its own.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import _queueing as q
import numpy as np
import pytest

from paretotune.errors import EvaluationError
from paretotune.evaluators.serving import (
    BatcherConfig,
    LoadGenSession,
    Offline,
    Server,
    ServingResult,
    measure_serving,
)
from paretotune.evaluators.serving.fake import FakeEngine
from paretotune.evaluators.serving.measure import NoValidQPS

pytestmark = pytest.mark.usefixtures("loadgen")

INPUTS = {"x": np.zeros((128, 4), dtype=np.float32)}
A_MS, B_MS = 1.5, 0.5  # M/D/1 engine: 2 ms a request
BOUND_MS = 15.0  # ~7 service times: steep tail, so the critical QPS is well defined
RUN_S = 2.0
TOLERANCE = 0.15  # the issue's
T = TypeVar("T")


def _engine(a: float, b: float):
    return lambda: FakeEngine(a, b, busy=False)


def _offline_ms_per_batch(a: float, b: float, batcher: BatcherConfig) -> tuple[float, float]:
    """(ms per batch at saturation as LoadGen measures it, mean formed batch size)."""
    result = _steady(lambda: measure_serving(_engine(a, b), INPUTS, Offline(budget_s=3.0), batcher),
                     what="offline run")
    mean = result.details["mean_batch_size"]
    assert result.offline_qps is not None
    return 1000.0 * mean / result.offline_qps, mean


class _StallProbe:
    """A thread that sleeps `PERIOD_S` at a time during a measurement and records how late it
    wakes: the machine's own pauses, which no queueing model of the harness knows.

    Measured here (AMD EPYC VM, 2 cores, a 2 ms period for 20 s): idle, the latest wake-up
    was 3.9 ms late (p99.9 2.1 ms); with three busy processes beside it 8.0 ms (p99.9 4.0 ms):
    Linux wakes a sleeper promptly even on a loaded machine. During this module's searches on
    a quiet machine the worst was 6.4-9.9 ms (the harness's own threads). A wake-up later than
    `STALL_MS`, longer than the 15 ms bound of most of these tests, is the VM itself paused
    (another tenant's vCPU ran), as in the queueing failures seen in CI."""

    PERIOD_S = 0.005
    STALL_MS = 20.0

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            time.sleep(self.PERIOD_S)
            self.late_ms.append(1000 * (time.perf_counter() - t - self.PERIOD_S))

    def __enter__(self) -> _StallProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def stalls(self) -> list[float]:
        return [x for x in self.late_ms if x > self.STALL_MS]

    def summary(self) -> str:
        worst = max(self.late_ms, default=0.0)
        return f"{len(self.stalls)} pauses over {self.STALL_MS:g} ms in {len(self.late_ms)} wake-ups, the worst {worst:.1f} ms"


def _steady(measure: Callable[[], T], *, what: str) -> T:
    """`measure()`, measured again (up to twice) when the machine itself paused during it
    (`_StallProbe`); the third is kept whatever the probe saw."""
    for attempt in range(3):
        with _StallProbe() as probe:
            try:
                outcome: T | NoValidQPS = measure()
            except NoValidQPS as exc:
                outcome = exc
        print(f"{what} {attempt + 1}: {probe.summary()}")
        # no QPS valid at all (15% of capacity missing the bound) is a stall the probe may have
        # slept through, so it too is measured once more, as before the probe
        if not probe.stalls and not (attempt == 0 and isinstance(outcome, NoValidQPS)):
            break
        print(f"the machine paused during the {what} (or no QPS was valid); measuring again")
    if isinstance(outcome, NoValidQPS):
        raise outcome
    return outcome


def _server(*args, **kwargs) -> ServingResult:
    """`measure_serving` of a Server scenario on a steady machine (`_steady`).

    These tests compare the harness with queueing theory on a machine that runs the harness's
    threads when they are due. This VM sometimes pauses for tens of milliseconds, over and over
    for seconds on end: then even a QPS at 15% of capacity misses the bound (seen in CI: 73 QPS,
    p99 13.4 ms at a 15 ms bound), and the batching case found 418 QPS against 710 simulated.
    That says nothing about the harness, whose answer is right for the machine it got. So a
    search during which the probe saw such pauses is measured again, and so is a first search
    that found no valid QPS at all. A search without pauses is judged as it is."""
    return _steady(lambda: measure_serving(*args, **kwargs), what="search")


def _unit_schedule(result: ServingResult) -> list[float]:
    """LoadGen's seeded Poisson schedule at unit rate, from the arrivals the runs recorded.

    Every Server run issues the same unit schedule scaled by its target QPS, late by whatever
    its issue thread was delayed (never early), so the least delayed sighting of each query
    across the runs is the schedule: one stall rescaled from a fast run to a slow one would be
    a burst that never happened.
    """
    server = [r for r in result.runs if r.scenario == "server" and r.arrivals_s]
    scaled = [np.asarray(r.arrivals_s) * r.target_qps for r in server]
    longest = max(len(u) for u in scaled)
    unit = np.full(longest, np.inf)
    for u in scaled:
        unit[: len(u)] = np.minimum(unit[: len(u)], u)
    return np.maximum.accumulate(unit).tolist()


def _spread(model: q.Sojourns, bound: float, lo: float, hi: float, n: int) -> list[float]:
    """The critical QPS over fresh Poisson realizations: its 5%, 50% and 95% quantiles."""
    values = [
        q.critical_qps(
            model,
            q.poisson_unit(n, seed),
            bound,
            min_duration=RUN_S,
            min_queries=500,
            lo=lo,
            hi=hi,
        )
        for seed in range(40)
    ]
    return q.quantiles(values, (0.05, 0.5, 0.95))


@pytest.fixture(scope="module")
def md1_measured() -> tuple[ServingResult, float]:
    """The M/D/1 case measured once: (the peak search's result, effective ms per request)."""
    d_ms, _ = _offline_ms_per_batch(A_MS, B_MS, BatcherConfig())
    result = _server(
        _engine(A_MS, B_MS),
        INPUTS,
        Server(p99_ms=BOUND_MS, budget_s=40.0),
        BatcherConfig(),
        run_s=RUN_S,
        keep_arrivals=True,
    )
    return result, d_ms


def test_md1_model_matches_erlang_exact_distribution() -> None:
    """The Lindley simulation used below is M/D/1: its tail matches Erlang's exact formula."""
    d, lam, bound = 0.002, 300.0, 0.010
    exact = 1 - q.md1_wait_cdf(bound - d, lam, d)
    unit = q.poisson_unit(200_000, seed=7)
    sojourns = q.md1(d)(unit, lam)
    simulated = sum(s > bound for s in sojourns) / len(sojourns)
    assert simulated == pytest.approx(exact, rel=0.1), (simulated, exact)
    assert q.early_stopping_h(0) == 459  # LoadGen: "would need at least 67 more" after 392


def test_server_qps_matches_md1(md1_measured) -> None:
    result, d_ms = md1_measured
    assert d_ms >= A_MS + B_MS  # the engine cannot be faster than its service time
    assert result.details["mean_batch_size"] == 1.0
    model = q.md1(d_ms / 1000)
    bound = BOUND_MS / 1000
    cap = 1000 / d_ms
    same_schedule = q.critical_qps(
        model, _unit_schedule(result), bound, min_duration=RUN_S, min_queries=500, lo=1.0, hi=cap
    )
    low, median, high = _spread(model, bound, 1.0, cap, n=int(cap * RUN_S * 1.5))
    report = (
        f"server_qps {result.server_qps:.1f}; M/D/1 (D = {d_ms:.3f} ms, LoadGen's rule) on the "
        f"same schedule {same_schedule:.1f}, over fresh schedules 5/50/95% "
        f"{low:.1f}/{median:.1f}/{high:.1f}; exact M/D/1 p99 = bound at "
        f"{q.md1_qps_at_p99(bound, d_ms / 1000):.1f}; runs {result.details['runs']}"
    )
    print(report)  # shown with -rP: the margin, run by run
    # The M/D/1 queue's critical QPS over fresh arrival schedules brackets what LoadGen's search
    # finds. The same-schedule value is reported, not asserted: D comes from the first runs, and
    # a machine's stalls move it either way (measured: 193 against 288 under load, 339 against
    # 294 quiet), while the spread over schedules held in every run.
    assert low * (1 - TOLERANCE) <= result.server_qps <= high * (1 + TOLERANCE), report


def _batching_case(a: float, b: float, config: BatcherConfig, bound_ms: float) -> tuple[bool, str, ServingResult]:
    """Measure the batching case once: (whether the harness's QPS is within TOLERANCE of the
    batcher simulated on the same schedule, the report, the result)."""
    one_ms, _ = _offline_ms_per_batch(a, b, BatcherConfig())
    full_ms, mean = _offline_ms_per_batch(
        a, b, BatcherConfig(max_batch_size=8, preferred_batch_sizes=(8,))
    )
    assert mean == pytest.approx(8.0, abs=0.1)

    def service(n: int) -> float:  # measured at 1 and 8, linear between: a + b*n plus our cost
        return (one_ms + (full_ms - one_ms) * (n - 1) / 7) / 1000

    result = _server(
        _engine(a, b),
        INPUTS,
        Server(p99_ms=bound_ms, budget_s=40.0),
        config,
        run_s=RUN_S,
        keep_arrivals=True,
    )
    model = q.batcher(service, 8, (4, 8), 0.002)
    cap = 8 / service(8)
    same_schedule = q.critical_qps(
        model,
        _unit_schedule(result),
        bound_ms / 1000,
        min_duration=RUN_S,
        min_queries=500,
        lo=1.0,
        hi=cap,
    )
    report = (
        f"server_qps {result.server_qps:.1f}, simulated on the same schedule "
        f"{same_schedule:.1f} (service {one_ms:.2f} ms at 1, {full_ms:.2f} ms at 8); "
        f"mean batch {result.details['mean_batch_size']}; runs {result.details['runs']}"
    )
    within = result.server_qps == pytest.approx(same_schedule, rel=TOLERANCE)
    return within, report, result


def test_server_qps_with_batching_matches_simulation() -> None:
    # The model knows the service times measured (Offline) just before the Server search, not a
    # stall of this VM during it: one run seen here found 418 QPS against 710 simulated, its
    # p99 40 ms at 497 QPS where 25 ms holds on a steady machine. So a miss is measured once
    # more, service times included, and two misses in a row fail: a harness that is wrong
    # misses every time.
    a, b = 3.0, 0.5
    config = BatcherConfig(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=2000)
    within, report, result = _batching_case(a, b, config, 25.0)
    print(report)  # shown with -rP: the margin, run by run
    if not within:
        print("outside the tolerance; measuring once more")
        within, report, result = _batching_case(a, b, config, 25.0)
        print(report)
    assert within, report
    assert result.details["mean_batch_size"] > 1.5, report  # batching happened under load
    assert 0 < result.details["queue_share"] < 1


@pytest.fixture(scope="module")
def fast_measured() -> ServingResult:
    """A 1 ms engine at the same bound: quick to search (it needs 500 queries a run)."""
    return _server(
        _engine(0.5, 0.5),
        INPUTS,
        Server(p99_ms=BOUND_MS, budget_s=12.0, tolerance=0.1),
        run_s=0.5,
    )


def test_slower_engine_serves_fewer_queries(md1_measured, fast_measured) -> None:
    slower, _ = md1_measured  # 2 ms a request against 1 ms
    assert fast_measured.server_qps is not None and slower.server_qps is not None
    assert slower.server_qps < fast_measured.server_qps / 1.3, (
        slower.server_qps,
        fast_measured.server_qps,
    )


def test_looser_bound_serves_more_queries(md1_measured) -> None:
    # bounds of a few ms would measure this shared machine's scheduling stalls (a woken thread
    # can wait milliseconds for a core), so both bounds are many service times
    tight, _ = md1_measured
    looser = _server(
        _engine(A_MS, B_MS),
        INPUTS,
        Server(p99_ms=4 * BOUND_MS, budget_s=12.0, tolerance=0.1),
        run_s=1.0,
    )
    assert looser.server_qps is not None and tight.server_qps is not None
    assert looser.server_qps > 1.1 * tight.server_qps, (looser.server_qps, tight.server_qps)
    assert looser.server_p99_ms is not None and looser.server_p99_ms <= 4 * BOUND_MS


def test_no_delay_and_preferred_size_one_forms_batches_of_one() -> None:
    ones = BatcherConfig(max_batch_size=8, preferred_batch_sizes=(1,), max_queue_delay_us=0)
    eights = BatcherConfig(max_batch_size=8, preferred_batch_sizes=(8,), max_queue_delay_us=0)
    offline = {}
    for name, config in (("ones", ones), ("eights", eights)):
        with LoadGenSession([FakeEngine(0.3, 0.1, busy=False)], INPUTS, config) as session:
            # Offline queues every sample at once: the strongest pull towards big batches
            offline[name] = session.offline(2000.0, min_duration_s=0.3)
    ones_run, eights_run = offline["ones"], offline["eights"]
    assert ones_run.batcher["requests"] >= 600
    assert ones_run.batcher["max_batch_size_formed"] == 1
    assert ones_run.batcher["batches"] == ones_run.batcher["requests"]
    assert ones_run.batcher["mean_batch_size"] == 1.0
    assert eights_run.batcher["mean_batch_size"] > 4
    assert ones_run.samples_per_second is not None and eights_run.samples_per_second is not None
    assert eights_run.samples_per_second > ones_run.samples_per_second  # 0.3 ms a batch saved


def test_invalid_at_every_qps_names_the_lowest_tried() -> None:
    with pytest.raises(EvaluationError, match="INVALID") as info:
        # the engine alone takes 2 ms: no QPS meets a 1 ms p99
        measure_serving(_engine(A_MS, B_MS), INPUTS, Server(p99_ms=1.0, budget_s=4.0), run_s=0.5)
    message = str(info.value)
    match = re.search(r"the lowest, ([0-9.]+) QPS, had p99 ([0-9.]+) ms", message)
    assert match, message
    assert float(match.group(1)) > 0 and float(match.group(2)) > 1.0
    assert "p99 <= 1 ms" in message


def test_a_slow_server_run_is_given_the_duration_its_queries_need(monkeypatch: pytest.MonkeyPatch) -> None:
    # at 17 QPS, 500 queries take ~30 s: a 28 s maximum (3 x 6 s + 10 s) would cut the run
    # short, which LoadGen reports as an error rather than a verdict
    captured = {}
    with LoadGenSession([FakeEngine(0.3, 0.1, busy=False)], INPUTS, BatcherConfig(max_batch_size=1)) as session:
        monkeypatch.setattr(session, "_start", lambda settings, *a: captured.setdefault("s", settings))
        session.server(17.0, 25.0, min_duration_s=6.0, min_queries=500)
        slow = captured.pop("s").max_duration_ms
        session.server(1000.0, 25.0, min_duration_s=6.0, min_queries=500)
        fast = captured.pop("s").max_duration_ms
    assert slow >= 1000 * 500 / 17.0 and fast == 28_000
