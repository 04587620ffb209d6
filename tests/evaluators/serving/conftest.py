"""Fixtures for the serving tests: LoadGen is required (it is in the dev extra)."""

from __future__ import annotations

import pytest

from paretotune.evaluators.serving import loadgen_problem


@pytest.fixture(scope="session")
def loadgen() -> None:
    """Fail, not skip, without LoadGen: `make test` installs it (`paretotune[serving]`)."""
    problem = loadgen_problem()
    if problem is not None:
        pytest.fail(f"the serving tests need MLPerf LoadGen: {problem}", pytrace=False)
