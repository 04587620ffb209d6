"""The serving scenario as a user runs it: a study whose trials are measured by MLPerf LoadGen
behind the dynamic batcher, its space, its metrics and its refusals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import paretotune as pt
from paretotune.errors import ConfigError
from paretotune.evaluators import TaskEvaluator
from paretotune.evaluators.config import resolve_config
from paretotune.evaluators.serving import harness

import helpers_eval

BATCHER_SPACE = pt.SearchSpace({
    "max_batch_size": pt.Choice([1, 4, 16]),
    "max_queue_delay_us": pt.Choice([0, 1000], when={"max_batch_size": [4, 16]}),
    "instances": pt.Choice([1, 2]),
})
SERVER = pt.Server(p99_ms=20, budget_s=4)


def test_a_server_study_searches_the_batcher_and_keeps_server_metrics(storage_url: str) -> None:
    study = pt.create_study("srv", storage_url, space=BATCHER_SPACE, scenario=SERVER,
                            objectives={"server_qps": "max", "server_p99_ms": "min"}, seed=0)
    study.optimize(helpers_eval.fake_server, n_trials=6)
    again = pt.load_study("srv", storage_url)
    assert again.scenario == SERVER
    best = again.pareto_front().pick(max="server_qps")
    assert best.metrics["server_qps"] == max(t.metrics["server_qps"] for t in again.completed())


def test_scenario_metrics_are_refused_under_another_scenario(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(ConfigError, match="'server_qps' is measured only under a server scenario"):
        pt.create_study("a", url, space=BATCHER_SPACE, objectives={"server_qps": "max"})
    with pytest.raises(ConfigError, match="'latency_p50_ms' is measured only under a single_stream"):
        pt.create_study("b", url, space=BATCHER_SPACE, scenario=SERVER, objectives={"latency_p50_ms": "min"})
    with pytest.raises(ConfigError, match="'offline_qps' is measured only under a offline"):
        pt.create_study("c", url, space=BATCHER_SPACE, scenario=SERVER, objectives={"offline_qps": "max"})
    with pytest.raises(ConfigError, match="scenario kind must be one of"):
        pt.create_study("d", url, space=BATCHER_SPACE, scenario={"kind": "batch"}, objectives={"accuracy": "max"})
    with pytest.raises(ConfigError, match="p99_ms must be > 0"):
        pt.create_study("e", url, space=BATCHER_SPACE, scenario={"kind": "server", "p99_ms": 0},
                        objectives={"server_qps": "max"})


def test_a_server_study_without_loadgen_is_refused_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "loadgen_problem", lambda: "mlperf_loadgen is not importable")
    with pytest.raises(ConfigError, match=r"pip install 'paretotune\[serving\]'"):
        pt.create_study("x", f"sqlite:///{tmp_path}/x.db", space=BATCHER_SPACE, scenario=SERVER,
                        objectives={"server_qps": "max"})
    assert not (tmp_path / "x.db").exists()  # refused before the store is touched


def test_a_yaml_spec_takes_the_scenario(tmp_path: Path) -> None:
    from paretotune.spec import load_spec_file

    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""\
        name: s
        space: {dimensions: {max_batch_size: [1, 8], instances: [1, 2]}}
        scenario: {kind: server, p99_ms: 25, budget_s: 30}
        objectives: {server_qps: max, accuracy: max}
    """))
    spec = load_spec_file(path)
    study = pt.create_study(spec.name, f"sqlite:///{tmp_path}/s.db", **spec.study_args)
    assert study.scenario == pt.Server(p99_ms=25, budget_s=30)
    assert study.spec["scenario"] == {"kind": "server", "p99_ms": 25.0, "budget_s": 30.0, "tolerance": 0.05}


def test_the_standard_space_searches_the_batcher_under_a_server(tiny_task_for_serving: pt.Task) -> None:
    space = pt.SearchSpace.standard(tiny_task_for_serving, scenario=SERVER, threads=(1, 2, 64))
    assert "batch_size" not in space.dimensions
    for name in ("max_batch_size", "max_queue_delay_us", "instances"):
        assert name in space.dimensions
    assert space.dimensions["max_queue_delay_us"].when == {"max_batch_size": (4, 8, 16, 32)}
    assert {"instances": (2,), "threads": (64,)} in space.forbidden  # above the cores
    offline = pt.SearchSpace.standard(tiny_task_for_serving, scenario=pt.Offline())
    assert "max_queue_delay_us" not in offline.dimensions and "max_batch_size" in offline.dimensions
    single = pt.SearchSpace.standard(tiny_task_for_serving)
    assert "batch_size" in single.dimensions and "max_batch_size" not in single.dimensions


def test_the_batcher_is_not_part_of_the_build() -> None:
    a = resolve_config({"engine": "onnxruntime", "max_batch_size": 1}, {})
    b = resolve_config({"engine": "onnxruntime", "max_batch_size": 16, "max_queue_delay_us": 500,
                        "instances": 2}, {})
    assert a.build_dict() == b.build_dict() and a.batcher != b.batcher
    with pytest.raises(ConfigError, match="max_batch_size"):
        resolve_config({"max_batch_size": 0}, {})


@pytest.mark.slow
def test_a_real_engine_is_served_and_one_build_serves_every_batcher(tiny_task_for_serving: pt.Task,
                                                                   tmp_path: Path) -> None:
    evaluator = TaskEvaluator(tiny_task_for_serving, cache_dir=tmp_path / "cache",
                              scenario=pt.Server(p99_ms=50, budget_s=8))
    plain = evaluator({"engine": "onnxruntime", "max_batch_size": 1})
    batched = evaluator({"engine": "onnxruntime", "max_batch_size": 8, "max_queue_delay_us": 1000,
                         "instances": 2})
    assert evaluator.builds == 1  # the batcher decides how the engine is served, not the build
    for m, size in ((plain, 1), (batched, 8)):
        assert m.metrics["server_qps"] > 0 and 0 < m.metrics["server_p99_ms"] <= 50
        assert m.metrics["accuracy"] == plain.metrics["accuracy"]
        serving = m.details["serving"]
        assert serving["details"]["mean_batch_size"] <= size
        assert "600" in serving["details"]["mlperf_minimums"]
    assert plain.details["serving"]["details"]["mean_batch_size"] == 1.0
    assert batched.details["batcher"]["instances"] == 2


@pytest.mark.slow
def test_a_config_that_sustains_no_load_within_the_bound_is_measured_as_zero_qps(
        tiny_task_for_serving: pt.Task, tmp_path: Path) -> None:
    # a 10 µs bound no engine meets: every LoadGen run is INVALID. The trial is still measured
    # (its accuracy counts), records server_qps 0 and is infeasible; the study goes on
    evaluator = TaskEvaluator(tiny_task_for_serving, cache_dir=tmp_path / "cache",
                              scenario=pt.Server(p99_ms=0.01, budget_s=4))
    m = evaluator({"engine": "onnxruntime", "max_batch_size": 1})
    assert m.metrics["server_qps"] == 0.0 and m.metrics["server_p99_ms"] > 0.01
    assert m.metrics["accuracy"] == 1.0
    assert "every target QPS tried INVALID for p99 <= 0.01 ms" in m.details["serving"]["details"]["no_valid_qps"]
    assert m.details["serving"]["details"]["lowest_qps_tried"] > 0
    # the record has a measured result's shape: its scenario, batcher and metrics
    assert m.details["serving"]["metrics"]["server_qps"] == 0.0
    assert m.details["serving"]["scenario"]["p99_ms"] == 0.01
    assert m.details["serving"]["batcher"]["max_batch_size"] == 1


@pytest.mark.slow
def test_a_server_study_whose_baseline_misses_the_bound_goes_on(tiny_task_for_serving: pt.Task,
                                                                 tmp_path: Path, storage_url: str) -> None:
    study = pt.create_study("slow-baseline", storage_url, space=BATCHER_SPACE,
                            task=tiny_task_for_serving, scenario=pt.Server(p99_ms=0.01, budget_s=4),
                            objectives={"server_qps": "max", "accuracy": "max"},
                            constraints={"accuracy_drop": ("<=", 0.01)}, seed=0, warm_start="none")
    study.optimize(TaskEvaluator(tiny_task_for_serving, cache_dir=tmp_path / "cache",
                                 scenario=study.scenario), n_trials=2)
    done = study.completed()
    assert len(done) == 2 and study.counts()["FAIL"] == 0
    assert study.baseline_trial() is not None and study.baseline_trial().metrics["server_qps"] == 0.0
    # relative metrics use the baseline's accuracy, and no zero-QPS trial is a deployable point
    assert all(t.metrics["accuracy_drop"] == 0.0 and not t.feasible for t in done)
    assert "server_qps >= 1" in [str(c) for c in study.constraints]
    assert list(study.pareto_front()) == []


@pytest.fixture(scope="module")
def tiny_task_for_serving() -> pt.Task:
    import numpy as np
    import torch

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))

    x = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    return pt.Task(model, {"x": x}, validation=[({"x": x}, None)], name="tiny-serving")


def test_a_server_studys_warm_start_serves_with_dynamic_batching(tiny_task_for_serving: pt.Task) -> None:
    from paretotune.search.proposals import warm_start_configs

    space = pt.SearchSpace.standard(tiny_task_for_serving, scenario=SERVER)
    corners = warm_start_configs(space)
    assert corners and all(c["max_batch_size"] == 8 and c["max_queue_delay_us"] == 500 for c in corners)
    assert space.baseline()["max_batch_size"] == 1  # the baseline stays the unbatched server
    single = warm_start_configs(pt.SearchSpace.standard(tiny_task_for_serving))
    assert single and all("max_batch_size" not in c for c in single)
