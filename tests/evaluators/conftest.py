"""Fixtures for the evaluator tests: tasks and a fast timing policy."""

from __future__ import annotations

import pytest

from paretotune.evaluators import Task, TaskEvaluator

from _evmodels import FAST, images, tiny_net


@pytest.fixture(scope="session")
def tiny_task() -> Task:
    return Task(
        tiny_net,
        {"x": images(8)},
        calibration=[{"x": images(16, seed=s)} for s in (1, 2)],
        validation=[({"x": images(32, seed=3)}, None), ({"x": images(32, seed=4)}, None)],
        name="tiny",
    )


@pytest.fixture(scope="session")
def digits_task() -> Task:
    from examples.digits import task

    return task


@pytest.fixture
def tiny_evaluator(tiny_task: Task, tmp_path) -> TaskEvaluator:
    return TaskEvaluator(tiny_task, cache_dir=tmp_path / "cache", timing=FAST)


@pytest.fixture(scope="session")
def loadgen() -> None:
    """Fail, not skip, without MLPerf LoadGen: `make test` installs it (`paretotune[serving]`)."""
    from paretotune.evaluators.serving import loadgen_problem

    problem = loadgen_problem()
    if problem is not None:
        pytest.fail(f"the serving tests need MLPerf LoadGen: {problem}", pytrace=False)
