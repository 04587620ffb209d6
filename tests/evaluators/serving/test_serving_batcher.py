"""The dynamic batcher on its own (no LoadGen), and the harness's plumbing around LoadGen."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from paretotune.errors import ConfigError, EvaluationError, TaskError
from paretotune.evaluators.serving import (
    BatcherConfig,
    DynamicBatcher,
    LoadGenSession,
    Offline,
    Server,
    measure_serving,
)
from paretotune.evaluators.serving.fake import FakeEngine
from paretotune.evaluators.serving.harness import parse_detail_log, read_run


class Recorder:
    """A runner that records the batches it is given."""

    def __init__(self, ms: float = 0.0) -> None:
        self.shapes: list[dict[str, tuple[int, ...]]] = []
        self.ms = ms

    def run(self, inputs):
        self.shapes.append({k: v.shape for k, v in inputs.items()})
        if self.ms:
            time.sleep(self.ms / 1000)
        return np.zeros((next(iter(inputs.values())).shape[0], 2), dtype=np.float32)


class Completions:
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.done = threading.Event()
        self.expect = 0

    def __call__(self, ids: list[int]) -> None:
        self.ids.extend(ids)
        if len(self.ids) >= self.expect:
            self.done.set()


def _tokens() -> dict[str, np.ndarray]:
    mask = np.zeros((4, 10), dtype=np.int64)
    for row, length in enumerate((3, 7, 2, 5)):
        mask[row, :length] = 1
    return {"input_ids": mask * 7, "attention_mask": mask, "scale": np.ones((4, 1), np.float32)}


def test_batches_are_cut_to_their_longest_real_row() -> None:
    runner = Recorder()
    batcher = DynamicBatcher(
        [runner], _tokens(), BatcherConfig(max_batch_size=4), print, padding_mask="attention_mask"
    )
    assert batcher.rows.batch([0, 2])["input_ids"].shape == (2, 3)
    assert batcher.rows.batch([0, 1, 2])["attention_mask"].shape == (3, 7)
    assert batcher.rows.batch([3])["scale"].shape == (1, 1)  # not a (rows, sequence) input
    unpadded = DynamicBatcher([runner], _tokens(), BatcherConfig(max_batch_size=4), print)
    assert unpadded.rows.batch([0, 2])["input_ids"].shape == (2, 10)


def test_padding_mask_must_name_an_input() -> None:
    with pytest.raises(TaskError, match="padding_mask must name"):
        DynamicBatcher([Recorder()], _tokens(), BatcherConfig(), print, padding_mask="mask")


def test_inputs_must_share_a_row_count() -> None:
    with pytest.raises(TaskError, match="one row count"):
        DynamicBatcher(
            [Recorder()], {"a": np.zeros((4, 2)), "b": np.zeros((3, 2))}, BatcherConfig(), print
        )


def test_one_runner_per_instance() -> None:
    with pytest.raises(ConfigError, match="instances is 2 but 1 runner"):
        DynamicBatcher([Recorder()], _tokens(), BatcherConfig(instances=2), print)


def test_requests_wait_for_a_preferred_size_or_the_delay() -> None:
    runner, completions = Recorder(), Completions()
    config = BatcherConfig(max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay_us=200_000)
    batcher = DynamicBatcher([runner], _tokens(), config, completions)
    with batcher:
        completions.expect = 4
        sent = time.perf_counter()
        batcher.submit([(i, i % 4) for i in range(4)])  # a preferred size: runs at once
        assert completions.done.wait(5)
        at_once = time.perf_counter() - sent
        completions.expect = 6
        completions.done.clear()
        sent = time.perf_counter()
        batcher.submit([(10, 0), (11, 1)])  # too few: they wait out the 200 ms delay together
        assert completions.done.wait(5)
        waited = time.perf_counter() - sent
    assert [s["input_ids"][0] for s in runner.shapes] == [4, 2]
    assert sorted(completions.ids) == [0, 1, 2, 3, 10, 11]
    assert waited >= 0.2 > at_once
    stats = batcher.stats()
    assert stats.batch_sizes == [4, 2]
    assert stats.queue_share is not None and stats.queue_share > 0.5


def test_instances_run_side_by_side() -> None:
    runners, completions = [Recorder(ms=100), Recorder(ms=100)], Completions()
    completions.expect = 2
    batcher = DynamicBatcher(runners, _tokens(), BatcherConfig(instances=2), completions)
    with batcher:
        started = time.perf_counter()
        batcher.submit([(0, 0), (1, 1)])
        assert completions.done.wait(5)
        elapsed = time.perf_counter() - started
    assert all(len(r.shapes) == 1 for r in runners)  # one batch each, not two on one
    assert elapsed < 0.19  # overlapped: sleeping releases the GIL


class Failing:
    def __init__(self, after: int) -> None:
        self.calls, self.after = 0, after

    def run(self, inputs):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("kernel exploded")
        return np.zeros((next(iter(inputs.values())).shape[0], 1), dtype=np.float32)


def test_an_engine_that_raises_fails_the_measurement_without_hanging(loadgen) -> None:
    with pytest.raises(EvaluationError, match="kernel exploded"):
        measure_serving(lambda: Failing(after=5), _tokens(), Server(p99_ms=50, budget_s=5))


def test_wrong_output_rows_are_caught(loadgen) -> None:
    class OneRow:
        def run(self, inputs):
            return np.zeros((1, 1), dtype=np.float32)

    with pytest.raises(TaskError, match="returned 1 output row"):
        measure_serving(OneRow, _tokens(), Offline(), BatcherConfig(max_batch_size=4))


def test_measure_serving_refuses_single_stream() -> None:
    with pytest.raises(ConfigError, match="single_stream is timed by the timing harness"):
        measure_serving(Recorder, _tokens(), {"kind": "single_stream"})


def test_results_are_read_from_loadgens_own_logs(loadgen, tmp_path) -> None:
    inputs = {"x": np.zeros((16, 1), dtype=np.float32)}
    with LoadGenSession(
        [FakeEngine(1.0, busy=False)], inputs, BatcherConfig(), log_dir=tmp_path
    ) as s:
        run = s.server(400.0, 50.0, min_duration_s=0.5, min_queries=500)
    folders = sorted(tmp_path.iterdir())
    assert len(folders) == 1
    records = parse_detail_log(folders[0] / "mlperf_log_detail.txt")
    assert records["result_validity"] == ("VALID" if run.valid else "INVALID")
    assert run.query_count == records["result_query_count"] >= 500
    assert run.scheduled_qps == records["result_scheduled_samples_per_sec"]
    assert run.p99_ms == pytest.approx(
        records["result_99.00_percentile_latency_ns"] / 1e6, abs=1e-3
    )
    assert run.latency_ms["min"] >= 1.0  # the engine's 1 ms, as LoadGen timed it
    assert run.batcher["requests"] == run.query_count
    again = read_run(folders[0], scenario="server", target_qps=400.0, min_duration_s=0.5, min_query_count=500,
                     wall_s=0.0, batcher={})
    assert again.valid == run.valid and again.latency_ms == run.latency_ms


def test_a_log_without_the_verdict_is_an_error(tmp_path) -> None:
    (tmp_path / "mlperf_log_detail.txt").write_text(':::MLLOG {"key": "x", "value": 1}\n')
    with pytest.raises(EvaluationError, match="no 'result_validity' record"):
        read_run(tmp_path, scenario="server", target_qps=1.0, min_duration_s=1.0, min_query_count=1, wall_s=0.0,
                 batcher={})


def test_an_engine_that_cannot_be_built_or_warmed_is_an_evaluation_error(loadgen) -> None:
    def broken():
        raise RuntimeError("no such provider")

    with pytest.raises(EvaluationError, match="building engine instance 0 failed"):
        measure_serving(broken, _tokens(), Offline())
    with pytest.raises(EvaluationError, match="warming up: RuntimeError"):
        measure_serving(lambda: Failing(after=0), _tokens(), Offline())
