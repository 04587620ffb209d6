from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import paretotune as pt
from paretotune.search.pareto import Front, hypervolume, non_dominated, reference_point
from paretotune.search.trial import Trial, TrialState


def brute_force_front(points: np.ndarray) -> np.ndarray:
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if np.all(points[j] <= points[i]) and np.any(points[j] < points[i]):
                keep[i] = False
                break
    return keep


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 40),
    m=st.integers(2, 3),
    seed=st.integers(0, 10_000),
    discrete=st.booleans(),
)
def test_front_matches_brute_force(n: int, m: int, seed: int, discrete: bool) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 4, size=(n, m)).astype(float) if discrete else rng.random((n, m))
    assert np.array_equal(non_dominated(pts), brute_force_front(pts))


def test_hypervolume_matches_hand_computation() -> None:
    # 2-D: points (1,3), (2,2), (3,1) with reference (4,4):
    # union of boxes = 3*1 + 2*1 + 1*1 ... computed as staircase: (4-1)*(4-3) + (4-2)*(3-2) + (4-3)*(2-1) = 3 + 2 + 1
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(pts, np.array([4.0, 4.0])) == pytest.approx(6.0)
    # dominated and out-of-reference points add nothing
    more = np.vstack([pts, [[3.5, 3.5], [5.0, 0.5]]])
    assert hypervolume(more, np.array([4.0, 4.0])) == pytest.approx(6.0)
    # 3-D: one point (1,1,1) against (2,3,4): box 1*2*3 = 6; adding (0,2,2) adds 2*1*2 - overlap(1*1*2) = 2
    pts3 = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 2.0]])
    assert hypervolume(pts3, np.array([2.0, 3.0, 4.0])) == pytest.approx(6.0 + 2.0)


def test_reference_point_is_ten_percent_worse_than_baseline() -> None:
    # minimize latency 2.0 ms; maximize accuracy 0.9 -> loss -0.9; zero gets an absolute margin
    ref = reference_point([2.0, -0.9, 0.0])
    assert ref == pytest.approx([2.2, -0.81, 0.1])


def _trial(n: int, **metrics: float) -> Trial:
    return Trial(n, TrialState.COMPLETE, pt.Config({"n": n}), metrics, feasible=True)


def test_pick_rules() -> None:
    front = Front(
        [
            _trial(1, latency_p50_ms=1.0, throughput=100.0, accuracy=0.90, latency_p99_ms=2.0),
            _trial(2, latency_p50_ms=2.0, throughput=300.0, accuracy=0.95, latency_p99_ms=6.0),
            _trial(3, latency_p50_ms=3.0, throughput=200.0, accuracy=0.99, latency_p99_ms=4.0),
        ],
        {"latency_p50_ms": "min", "accuracy": "max"},
    )
    assert front.pick(max="throughput").number == 2
    assert front.pick(max="throughput", where={"latency_p99_ms": ("<=", 5.0)}).number == 3
    assert front.pick(min="latency_p50_ms").number == 1
    assert front.pick(trial=3).number == 3
    assert front.pick("knee").number in (1, 2, 3)
    with pytest.raises(pt.ConfigError, match="closest are") as err:
        front.pick(max="throughput", where={"latency_p99_ms": ("<=", 1.0)})
    assert "trial 1: latency_p99_ms=2 violates latency_p99_ms <= 1" in str(err.value)
    with pytest.raises(pt.ConfigError, match="not measured"):
        front.pick(max="power_w")
    with pytest.raises(pt.ConfigError, match="exactly one"):
        front.pick(max="throughput", min="latency_p50_ms")
    with pytest.raises(pt.ConfigError, match="not on the front"):
        front.pick(trial=9)
    with pytest.raises(pt.ConfigError, match="unknown rule"):
        front.pick("elbow")


def test_knee_is_the_balanced_point() -> None:
    front = Front(
        [
            _trial(1, latency_p50_ms=1.0, accuracy=0.50),
            _trial(2, latency_p50_ms=1.2, accuracy=0.97),
            _trial(3, latency_p50_ms=5.0, accuracy=0.99),
        ],
        {"latency_p50_ms": "min", "accuracy": "max"},
    )
    assert front.pick("knee").number == 2


# -- dominance that respects noise ------------------------------------------------------------------

def _noisy_study(tmp_path, rows: list[tuple[float, float, tuple[float, float] | None]]) -> pt.Study:
    """A study whose trial i (0: the baseline) measured rows[i] = (p50, accuracy, p50 interval)."""
    space = pt.SearchSpace({"x": pt.Choice(list(range(len(rows))))})
    study = pt.create_study("noise", f"sqlite:///{tmp_path}/n.db", space=space, warm_start="none",
                            objectives={"latency_p50_ms": "min", "accuracy": "max"})
    for i in range(1, len(rows)):
        study.enqueue({"x": i})
    for p50, accuracy, ci in rows:
        pending = study.ask()
        details = {"latency_p50_ms_ci": list(ci)} if ci else {}
        study.tell(pending, {"latency_p50_ms": p50, "accuracy": accuracy}, details)
    return study


def test_exact_ties_and_float_noise_do_not_keep_a_dominated_trial_on_the_front(tmp_path) -> None:
    study = _noisy_study(tmp_path, [
        (11.66, 1.0, None),            # the unmodified baseline: fidelity 1
        (3.2, 1.0 - 3.6e-13, None),    # ORT fp32: 3.6x faster, fidelity 1 - 3.6e-13
        (5.0, 0.9, None),
        (7.0, 0.9, None),              # an exact tie in accuracy with trial 2, and slower
        (2.0, 0.9 - 1e-13, None),      # faster than 2 and 3, 1e-13 less accurate
    ])
    assert [t.number for t in study.pareto_front()] == [1, 4]
    # a coarser resolution is the study's to choose, per metric
    coarse = study.pareto_front(resolution={"accuracy": 0.5})
    assert [t.number for t in coarse] == [4] and coarse.resolution["accuracy"] == 0.5
    # and with exact comparison, the noise would win
    assert 0 in [t.number for t in study.pareto_front(resolution={"accuracy": 0})]


def test_the_front_with_confidence_ties_timings_whose_intervals_overlap(tmp_path) -> None:
    study = _noisy_study(tmp_path, [
        (10.0, 0.95, (9.5, 10.5)),
        (3.0, 0.95, (2.9, 3.1)),
        (3.05, 0.95, (2.95, 3.15)),  # 1.7% slower than trial 1, inside its interval
        (3.3, 0.95, (3.2, 3.4)),     # slower beyond the intervals
        (3.04, 0.90, None),          # no interval: its point counts, so 1 is faster and as accurate
    ])
    assert [t.number for t in study.pareto_front()] == [1]
    noisy = study.pareto_front(confidence=0.95)
    assert [t.number for t in noisy] == [1, 2] and noisy.confidence == 0.95
    assert study.trial(2).intervals == {"latency_p50_ms": (2.95, 3.15)}  # read back from the store
    with pytest.raises(pt.ConfigError, match=r"confidence must be None .* one of \[0.95\].*got 0.9"):
        study.pareto_front(confidence=0.9)
    with pytest.raises(pt.ConfigError, match=r"resolution.accuracy: must be a finite number >= 0.*got -1"):
        study.pareto_front(resolution={"accuracy": -1})


def test_the_interval_level_is_the_harness_level() -> None:
    from paretotune.evaluators.timing import CI_LEVEL
    from paretotune.search.pareto import INTERVAL_LEVEL

    assert INTERVAL_LEVEL == CI_LEVEL


def test_a_studys_resolution_is_stored_with_it(tmp_path) -> None:
    space = pt.SearchSpace({"x": pt.Choice([0, 1])})
    url = f"sqlite:///{tmp_path}/r.db"
    study = pt.create_study("r", url, space=space, warm_start="none", resolution={"accuracy": 0.5},
                            objectives={"latency_p50_ms": "min", "accuracy": "max"})
    study.enqueue({"x": 1})
    for p50, accuracy in ((2.0, 1.0), (1.0, 0.9)):
        pending = study.ask()
        study.tell(pending, {"latency_p50_ms": p50, "accuracy": accuracy})
    again = pt.load_study("r", url)
    assert again.spec["resolution"] == {"accuracy": 0.5}
    assert [t.number for t in again.pareto_front()] == [1]  # 0.9 and 1.0 tie at 0.5
    assert [t.number for t in again.pareto_front(resolution={"accuracy": 1e-6})] == [0, 1]
    with pytest.raises(pt.ConfigError, match=r"resolution.accuracy: must be a finite number >= 0.*got 'x'"):
        pt.create_study("bad", url, space=space, resolution={"accuracy": "x"},
                        objectives={"latency_p50_ms": "min", "accuracy": "max"})
