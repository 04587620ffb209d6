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


_TESTS = Path(__file__).resolve().parent
_RAY_TESTS = _TESTS / "ray"
#: modules whose assertions are relations between timings (a paired speedup, a p99 bound at a
#: QPS, an A/B verdict) or that need Ray's whole cluster: `make test` (scripts/run-tests.sh) runs
#: them alone in one process after the parallel phase, so no other test's load moves them
SERIAL = {
    _TESTS / "evaluators" / "serving" / "test_serving_queueing.py",
    _TESTS / "evaluators" / "test_evaluators_timing.py",
    _TESTS / "workers" / "test_compare.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the cluster `postgres`, so `-m "not postgres"` leaves it out,
    and the `SERIAL` ones and the Ray tests `serial` (the Ray tests start one local cluster, and
    `ray stop --force` at its end stops every Ray process on the machine). Under pytest-xdist
    each worker starts its own PostgreSQL cluster."""
    for item in items:
        if "pg_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        path = Path(str(item.path)).resolve()
        if _RAY_TESTS in path.parents or path in SERIAL:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(autouse=True)
def _own_spool(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test spools measurements to its own folder (not ~/.cache/paretotune/spool): two
    tests running at once may use the same study name."""
    monkeypatch.setenv("PARETOTUNE_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))


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
