"""The benchmark scripts run on tiny budgets and produce well-formed results; the replay
evaluator serves the stored table faithfully. Timed figures are never asserted here."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from paretotune.errors import ConfigError, EvaluationError, InvalidConfigError
from paretotune.evaluators.measurement import Measurement
from paretotune.space import Config
from paretotune.testing import ReplayEvaluator

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float = 240) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# -- the replay evaluator ------------------------------------------------------------------------


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["config", "state", "reason", "latency_p50_ms", "accuracy", "stable", "spread"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})


def test_replay_serves_recorded_metrics_and_states(tmp_path: Path) -> None:
    ok = Config({"engine": "torch", "batch_size": 1})
    bad = Config({"engine": "torch", "batch_size": 8})
    broken = Config({"engine": "onnxruntime", "batch_size": 1})
    table = tmp_path / "t.csv"
    _write_table(
        table,
        [
            {"config": ok.to_json(), "state": "COMPLETE", "latency_p50_ms": 1.5, "accuracy": 0.9,
             "stable": True, "spread": 1.02},
            {"config": bad.to_json(), "state": "INVALID", "reason": "int4 on torch"},
            {"config": broken.to_json(), "state": "FAIL", "reason": "build crashed"},
        ],
    )
    replay = ReplayEvaluator(table)
    m = replay({"batch_size": 1, "engine": "torch"})  # a plain mapping, any key order
    assert isinstance(m, Measurement)
    assert m.metrics == {"latency_p50_ms": 1.5, "accuracy": 0.9}
    assert m.details["stable"] is True and m.details["spread"] == 1.02
    with pytest.raises(InvalidConfigError, match="int4 on torch"):
        replay(bad)
    with pytest.raises(EvaluationError, match="build crashed"):
        replay(broken)
    with pytest.raises(ConfigError, match="not in the table"):
        replay({"engine": "torch", "batch_size": 32})
    assert len(replay) == 3 and replay.complete() == [{"latency_p50_ms": 1.5, "accuracy": 0.9}]


def test_replay_rejects_a_table_without_its_columns(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("configuration,latency\n{},1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="missing columns"):
        ReplayEvaluator(table)


# -- the stored table ---------------------------------------------------------------------------


def test_stored_table_covers_its_space_with_a_fingerprint() -> None:
    eff = _script("sampler_efficiency")
    meta = json.loads(eff.TABLE.with_suffix(".json").read_text(encoding="utf-8"))
    assert {"cpu_model", "isa", "versions"} <= set(meta["hardware"])
    assert len(meta["load_average_before"]) == 3 and meta["timing_policy"]
    replay = ReplayEvaluator(eff.TABLE)
    grid = {c.to_json() for c in eff.stored_space(eff.TABLE).grid()}
    assert grid == set(replay.configs())
    assert len(replay.complete()) >= 500
    assert meta["complete"] == len(replay.complete())


def test_true_front_scores_itself_perfectly() -> None:
    eff = _script("sampler_efficiency")
    truth = eff.TrueFront(eff.TABLE)
    rows = [m for m in truth.replay.complete() if truth.baseline_accuracy - m["accuracy"] <= eff.MAX_DROP]
    hv, igd = truth.score(rows)
    assert hv == pytest.approx(1.0) and igd == pytest.approx(0.0)
    baseline_only = truth.score([truth.replay.metrics(eff.stored_space(eff.TABLE).baseline())])
    assert baseline_only[0] < 1.0 and baseline_only[1] > 0.0


def test_igd_plus_counts_only_where_the_found_point_is_worse() -> None:
    import numpy as np

    eff = _script("sampler_efficiency")
    true = np.array([[0.0, 1.0], [1.0, 0.0]])
    lo, span = np.zeros(2), np.ones(2)
    assert eff.igd_plus(np.array([[-1.0, -1.0]]), true, lo, span) == 0.0  # dominates both
    assert eff.igd_plus(np.array([[0.0, 1.0]]), true, lo, span) == pytest.approx(0.5)
    assert math.isinf(eff.igd_plus(np.zeros((0, 2)), true, lo, span))


# -- the scripts, on tiny budgets ------------------------------------------------------------------


def test_sampler_efficiency_tiny(tmp_path: Path) -> None:
    out = tmp_path / "eff.json"
    stdout = _run(
        "benchmarks/sampler_efficiency.py", "--seeds", "2", "--samplers", "random", "tpe",
        "--fractions", "0.01", "0.02", "--jobs", "1", "--seed-offset", "5", "--json", str(out),
    )
    result = json.loads(out.read_text())
    assert result["budgets"] == [5, 11] and result["seed_offset"] == 5 and "(from seed 5)" in stdout
    assert {(r["sampler"], r["budget"]) for r in result["rows"]} == {
        (s, b) for s in ("random", "tpe") for b in (5, 11)
    }
    for row in result["rows"]:
        assert len(row["hv_ratio"]) == 2
        assert all(0.0 <= v <= 1.0 + 1e-9 for v in row["hv_ratio"])
        assert all(v >= 0.0 for v in row["igd_plus"])
        assert (row["p_hv_vs_random"] is None) == (row["sampler"] == "random")
        reached = sum(v >= 0.95 for v in row["hv_ratio"])
        assert f"| {row['sampler']} | {row['budget']} ({row['fraction']:.0%}) | " in stdout
        assert f"| {reached}/2 |" in stdout
    assert "| tpe | 11 (2%) |" in stdout


def test_sampler_fidelity_tiny(tmp_path: Path) -> None:
    pytest.importorskip("pymoo")
    out = tmp_path / "fid.json"
    stdout = _run(
        "benchmarks/sampler_fidelity.py", "--problems", "zdt1-6", "--samplers", "random",
        "--seeds", "2", "--budget", "4", "--json", str(out), timeout=120,
    )
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert (row["problem"], row["sampler"], row["budget"], row["seeds"]) == ("zdt1-6", "random", 4, [0, 1])
    assert len(row["hv_paretotune"]) == len(row["hv_optuna"]) == 2
    assert all(0.0 <= v <= row["true_hv"] + 1e-9 for v in row["hv_paretotune"] + row["hv_optuna"])
    assert 0.0 <= row["p"] <= 1.0 and row["ref_kind"] == "random"
    assert "| zdt1-6 | continuous (random) | random | 4 |" in stdout


def test_sampler_fidelity_problems_reach_their_known_fronts() -> None:
    """The mixed space can reach DTLZ2's front (its distance variables can all be 0.5), and a
    front point scores the true front's share of the hypervolume, not more."""
    pytest.importorskip("pymoo")
    fid = _script("sampler_fidelity")
    mixed = fid.make_problem("dtlz2-mixed")
    on_front = mixed.space.config({"x0": 0.3, "x1": 0.7, "x2": 0.5, "x3": 9, "x4": 500, "x5": "mid"})
    f = mixed.evaluate(on_front)
    assert sum(v * v for v in f.values()) == pytest.approx(1.0)  # DTLZ2's front: the unit sphere
    assert mixed.ref_kind == "front" and list(mixed.ref) == pytest.approx([1.1, 1.1, 1.1])
    assert 0.0 < mixed.hv([f]) < mixed.true_hv
    off = mixed.evaluate(mixed.space.config({"x0": 0.3, "x1": 0.7, "x2": 0.0, "x3": 1, "x4": 0, "x5": "off"}))
    assert sum(v * v for v in off.values()) > 1.5
    zdt = fid.make_problem("zdt1-6")
    assert zdt.ref_kind == "random" and zdt.hv([{"f1": 1e9, "f2": 1e9}]) == 0.0


def test_repeatability_tiny(tmp_path: Path) -> None:
    out = tmp_path / "rep.json"
    stdout = _run("benchmarks/repeatability.py", "--repeats", "1", "--configs", "2",
                  "--confirm-processes", "2", "--json", str(out))
    result = json.loads(out.read_text())
    labels = ["torch fp32, batch 1", "onnxruntime fp32, batch 1"]
    (run,) = result["runs"]
    assert [s["configuration"] for s in run["summary"]] == labels
    for s in run["summary"]:
        assert s["repeats"] == 1 and s["p50_spread"] == 0.0 and s["p50_median_ms"] > 0
        assert 0 <= s["gave_up"] <= 1 and 0 <= s["extended"] <= 1
    assert "within the 5% p50 target" in stdout
    for s in run["summary"]:  # the paired speedup and the interval, from the same measurements
        assert s["speedup_median"] > 0 and s["speedup_spread"] == 0.0 and s["p50_ci_width_median"] >= 0
    assert "within the 5% paired-speedup target" in stdout
    # the confirmed part: the product's Study.confirm, median of 2 fresh processes
    assert result["confirm_processes"] == 2
    assert [s["configuration"] for s in result["confirmed_summary"]] == labels
    (rows,) = result["confirmed"]
    assert all(0 < r["best_p50_ms"] <= r["p50_ms"] and r["process_p50_spread"] >= 0 for r in rows)
    assert [s["configuration"] for s in result["best_summary"]] == labels
    assert "within the 5% p50 target (confirmed)" in stdout


def test_repeatability_drift_summary_tells_a_drift_from_noise() -> None:
    """A speedup that steps from 3.0 to 4.0 halfway keeps its spread in medians of 4 (a drift);
    one that alternates 3.0, 4.0 loses it (noise that medians average out)."""
    rep = _script("repeatability")
    step = [[float(i), 3.0 if i < 8 else 4.0] for i in range(16)]
    alternating = [[float(i), 3.0 + i % 2] for i in range(16)]
    drift, noise = rep.drift_summary({"step": step, "alternating": alternating})
    assert drift["spread"] == noise["spread"] == pytest.approx(1 / 3)
    assert drift["lag1_autocorrelation"] > 0.7 and noise["lag1_autocorrelation"] == pytest.approx(-1.0)
    assert drift["median_of_4_spread"] == pytest.approx(1 / 3) and noise["median_of_4_spread"] == 0.0
    assert drift["measurements"] == 16 and drift["seconds"] == 15.0
    table = rep.drift_markdown([drift, noise])
    assert "| step | 16 | 15 | 3.500 | 33.3% |" in table and "median of 8" in table


def test_repeatability_spread_is_max_over_min() -> None:
    rep = _script("repeatability")
    rows = [
        [{"configuration": "a", "p50_ms": 1.0, "throughput": 10.0, "stable": True, "extended": False}],
        [{"configuration": "a", "p50_ms": 1.1, "throughput": 9.0, "stable": False, "extended": True}],
    ]
    (s,) = rep.summarize(rows, ["a"])
    assert s["p50_spread"] == pytest.approx(0.1) and not s["meets_target"]
    assert s["gave_up"] == 1 and s["extended"] == 1


def test_repeatability_runs_table_counts_each_runs_verdict_side_by_side() -> None:
    rep = _script("repeatability")

    def run(p50: list[bool], paired: list[float]) -> dict:
        summary = [{"meets_target": m, "speedup_meets_target": x <= 0.05, "speedup_spread": x}
                   for m, x in zip(p50, paired, strict=True)]
        return {"summary": summary, "loads": [0.5, 1.25]}

    table = rep.runs_table([
        run([True, False, False, False, False], [0.01, 0.02, 0.03, 0.04, 0.09]),  # 4 of 5: met
        run([True, True, True, True, False], [0.01, 0.06, 0.07, 0.02, 0.03]),  # 3 of 5: not met
        run([False] * 5, [0.01] * 5),
    ])
    assert table["need"] == 4
    assert [r["speedup_met"] for r in table["rows"]] == [4, 3, 5]
    assert [r["p50_met"] for r in table["rows"]] == [1, 4, 0]
    assert table["runs_meeting_target"] == 2 and table["runs_meeting_target_by_p50"] == 1
    assert table["rows"][1]["worst_speedup_spread"] == pytest.approx(0.07)
    text = rep.runs_markdown(table)
    assert "| 2 | 0.50-1.25 | 4/5 | 3/5 | 7.0% |" in text
    assert "met in 2/3 runs; by the absolute p50, 1/3" in text


def test_minilm_summary_finds_the_first_match() -> None:
    mini = _script("minilm_study")
    refs = {
        "torch eager fp32": {"latency_p50_ms": 10.0, "x_ort_fp32": 0.5},
        "onnxruntime fp32": {"latency_p50_ms": 5.0, "x_ort_fp32": 1.0},
        mini.HAND_TUNED: {"latency_p50_ms": 2.0, "x_ort_fp32": 2.5},
        mini.BEST: {"latency_p50_ms": 2.1, "x_ort_fp32": 2.4, "x_ort_fp32_range": [2.2, 2.6]},
    }
    trials = [
        {"number": 0, "latency_p50_ms": 10.0, "accuracy": 1.0, "feasible": True},
        {"number": 1, "latency_p50_ms": 1.0, "accuracy": 0.95, "feasible": False},
        {"number": 2, "latency_p50_ms": 2.05, "accuracy": 0.993, "feasible": True},
        {"number": 5, "latency_p50_ms": 1.6, "accuracy": 0.992, "feasible": True,
         "config": {"engine": "onnxruntime", "batch_size": 1, "threads": 1}},
    ]
    s = mini.summarize({"trials": trials}, refs)
    assert s["first_match_trial"] == 2 and s["first_match_measured"] == 3
    assert s["best_trial"]["number"] == 5 and s["best_measured_trial"] == 4
    assert s["best_speedup_vs_ort_fp32"] == pytest.approx(5.0 / 1.6)
    assert s["hand_tuned_speedup_vs_ort_fp32"] == pytest.approx(2.5)
    assert s["paired_best_vs_ort_fp32"] == pytest.approx(2.4)
    assert s["paired_matches_hand_tuned"]  # 2.4 >= 2.5 / 1.05
    assert not mini.summarize({"trials": trials}, {**refs, mini.BEST: {**refs[mini.BEST], "x_ort_fp32": 2.3}})[
        "paired_matches_hand_tuned"
    ]
    # the hand-tuned config itself, re-measured a little slower than its reference: a match
    hand = {"engine": "onnxruntime", "bit_width": 8, "quant_mode": "dynamic", "per_channel": True,
            "batch_size": 1, "threads": 1}
    own = mini.summarize(
        {"trials": [*trials, {"number": 9, "latency_p50_ms": 2.2, "accuracy": 0.992, "feasible": True, "config": hand}]},
        {**refs, mini.BEST: {**refs[mini.BEST], "x_ort_fp32": 2.3, "trial": 9}},
    )
    assert own["paired_best_is_hand_tuned"] and own["paired_matches_hand_tuned"]
    ort8 = {"engine": "onnxruntime", "bit_width": 8, "batch_size": 1}
    candidates = mini.best_configs({"trials": [
        {**trials[0], "config": {"engine": "torch", "batch_size": 1}},
        {**trials[2], "config": ort8},
        {**trials[3], "config": {**ort8, "batch_size": 8}},  # the same build at another batch
        {"number": 7, "latency_p50_ms": 3.0, "accuracy": 0.999, "feasible": True, "config": {"engine": "x"}},
    ]})
    assert candidates == [
        {"trial": 5, "config": {"engine": "onnxruntime", "bit_width": 8}},
        {"trial": 7, "config": {"engine": "x"}},
        {"trial": 0, "config": {"engine": "torch"}},
    ]
    assert mini.is_hand_tuned({"engine": "onnxruntime", "bit_width": 8, "quant_mode": "dynamic",
                               "per_channel": True, "precision": {"a": "int8"}})


def test_minilm_target_is_the_samplers_best_against_the_fastest_reference() -> None:
    mini = _script("minilm_study")

    def ref(rounds: list[float], accuracy: float) -> dict:
        return {"latency_p50_ms": sorted(rounds)[1], "p50_per_round_ms": rounds, "accuracy": accuracy,
                "x_ort_fp32": 1.0, "x_ort_fp32_range": [1.0, 1.0], "rounds": 3,
                "p50_range_ms": [min(rounds), max(rounds)], "stable": "3/3"}

    refs = {
        "torch eager fp32": ref([10.0, 10.0, 10.0], 1.0),
        "onnxruntime fp32": ref([5.0, 5.0, 5.0], 1.0),
        mini.HAND_TUNED: ref([2.0, 2.2, 2.1], 0.9904),
        "openvino int8 NNCF": ref([1.8, 1.9, 1.7], 0.9878),  # fastest, below 0.99 fidelity
        "openvino bf16": {"unavailable": "needs a CPU with AMX-BF16 or avx512_bf16"},
        "study trial 3": ref([1.5, 1.6, 1.5], 0.999),  # the warm start's corner: not the sampler's
        "study trial 8": ref([2.0, 2.0, 2.0], 0.995),
    }
    refs[mini.BEST] = {**refs["study trial 3"], "trial": 3}
    trials = [
        {"number": 3, "latency_p50_ms": 1.5, "accuracy": 0.999, "feasible": True, "warm_start": True, "config": {}},
        {"number": 8, "latency_p50_ms": 2.0, "accuracy": 0.995, "feasible": True, "warm_start": False,
         "config": {"engine": "onnxruntime"}},
    ]
    s = mini.summarize({"trials": trials}, refs)
    assert s["paired_best_trial"] == 3 and s["paired_best_from_warm_start"]
    # the sampler's fastest (trial 8) against the fastest reference (OpenVINO int8): slower
    assert s["target"]["candidate"] == "study trial 8" and s["target"]["reference"] == "openvino int8 NNCF"
    assert s["target"]["ratios"] == pytest.approx([0.9, 0.95, 0.85]) and not s["target_met"]
    # against the fastest reference at fidelity >= 0.99 (the hand-tuned point): as fast or faster
    assert s["target_at_fidelity"]["reference"] == mini.HAND_TUNED
    assert s["target_at_fidelity"]["ratio_median"] == pytest.approx(1.05)
    assert s["sampler_best_config"] == {"engine": "onnxruntime"}
    text = mini.markdown({"trials": trials, "front": [], "phases_s": {"build": 0, "measure": 0, "baseline": 0,
                          "total": 0}, "counts": {}, "study_wall_s": 0, "load_before": [], "load_after": [],
                          "cache_hits": 0, "distinct_configs": 2, "unstable": 0, "failed": []}, refs, s)
    assert "| openvino bf16 | n/a: needs a CPU with AMX-BF16 or avx512_bf16 |" in text
    assert "target met (the sampler's fastest at fidelity >= 0.99 is >= 1.0x the fastest reference): False" in text


@pytest.mark.slow
def test_minilm_study_tiny(tmp_path: Path) -> None:
    out = tmp_path / "minilm.json"
    stdout = _run("benchmarks/minilm_study.py", "--n-trials", "2", "--n-workers", "1", "--rounds", "2",
                  "--json", str(out))
    payload = json.loads(out.read_text())
    assert payload["result"]["counts"]["COMPLETE"] == 2
    mini = _script("minilm_study")
    labels = set(payload["references"]) - set(mini.REFERENCES) - {mini.BEST}
    assert set(mini.REFERENCES) <= set(payload["references"])
    assert labels and all(label.startswith("study trial ") for label in labels)  # re-measured
    if mini.BEST in payload["references"]:
        assert f"study trial {payload['references'][mini.BEST]['trial']}" in labels
    measured = {label: r for label, r in payload["references"].items() if "unavailable" not in r}
    assert all(r["rounds"] == 2 and len(r["p50_per_round_ms"]) == 2 for r in measured.values())
    # OpenVINO bf16 is measured where the CPU has bf16, and otherwise says why not
    bf16 = payload["references"]["openvino bf16"]
    assert "latency_p50_ms" in bf16 or "BF16" in bf16["unavailable"]
    assert "openvino int8 NNCF" in measured and set(measured) >= {"torch eager fp32", "onnxruntime fp32"}
    assert all(isinstance(t["warm_start"], bool) for t in payload["result"]["trials"])
    assert "issue 14 target" in stdout and "target met" in stdout
    assert payload["result"]["phases_s"]["total"] > 0
    assert 0 in payload["result"]["front"] or payload["result"]["front"]
    assert "rounds round-robin (batch 1, 1 thread) |" in stdout


def test_speedup_probes_aligned_copy_is_the_same_array_on_a_64_byte_boundary() -> None:
    import numpy as np

    probes = _script("speedup_probes")
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)[:, :, :, :]
    for _ in range(4):
        y = probes._aligned(x)
        assert y.ctypes.data % 64 == 0 and y.shape == x.shape and y.dtype == x.dtype and np.array_equal(x, y)
