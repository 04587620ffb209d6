"""Shared fixtures. Storage tests take `storage_url` and run on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ is on sys.path: pytest puts a rootdir conftest's folder there (tests/ is no package).
from pgcluster import PostgresCluster, missing_requirement

# Set by `make test` (and so by CI): a missing PostgreSQL fails the run instead of skipping.
REQUIRE_POSTGRES_ENV = "PARETOTUNE_REQUIRE_POSTGRES"


def _postgres_required() -> bool:
    return os.environ.get(REQUIRE_POSTGRES_ENV, "").strip().lower() not in ("", "0", "false", "no")


# -- PostgreSQL ------------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the cluster `postgres`, so `-m "not postgres"` leaves it out."""
    for item in items:
        if "pg_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run (see tests/pgcluster.py)."""
    missing = missing_requirement()
    if missing is not None:
        reason = f"PostgreSQL tests need {missing}"
        if _postgres_required():
            pytest.fail(
                f"{reason} ({REQUIRE_POSTGRES_ENV} is set, so this is not skipped)", pytrace=False
            )
        pytest.skip(reason)
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh, empty database for this test, dropped afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{slug}_{uuid.uuid4().hex[:8]}"
    url = pg_cluster.create_database(name)
    try:
        yield url
    finally:
        pg_cluster.drop_database(name)


# -- either backend --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty study store: an SQLite file under tmp_path, or a PostgreSQL database."""
    if request.param == "sqlite":
        # Absolute path (four slashes), so nothing lands in the working directory.
        return f"sqlite:///{tmp_path.resolve() / 'study.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


# -- shared helpers for the controller tests ----------------------------------------------------
import paretotune as _pt  # noqa: E402


@pytest.fixture
def toy_space() -> _pt.SearchSpace:
    """A small joint space the FakeEvaluator understands."""
    return _pt.SearchSpace(
        {
            "prune_ratio": _pt.Float(0.0, 0.5, step=0.1),
            "bit_width": _pt.Choice([32, 16, 8, 4]),
            "batch_size": _pt.Int(1, 64, log=True),
            "engine": _pt.Choice(["torch", "onnxruntime"]),
        },
        forbidden=[{"engine": "torch", "bit_width": 4}],
    )


# Trial and worker processes are fresh interpreters: let them import test helper modules too.
_TESTS_DIR = str(Path(__file__).resolve().parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_TESTS_DIR, os.environ.get("PYTHONPATH")) if p)
