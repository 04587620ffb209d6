"""The test harness's throwaway PostgreSQL cluster and the fixtures built on it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa

from pgcluster import PostgresCluster, wait_until


def _process_gone(pid: int) -> bool:
    """True once pid has exited (a zombie awaiting its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _scalar(url: str, query: str) -> object:
    with contextlib.closing(psycopg2.connect(url, connect_timeout=10)) as conn:
        with conn.cursor() as cur:
            cur.execute(query)
            row = cur.fetchone()
            conn.commit()
    assert row is not None
    return row[0]


def test_accepts_password_connections_on_loopback_only(
    pg_cluster: PostgresCluster, pg_url: str
) -> None:
    assert pg_url.startswith(f"postgresql://paretotune:{pg_cluster.password}@127.0.0.1:")
    with contextlib.closing(psycopg2.connect(pg_url, connect_timeout=10)) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT host(inet_server_addr()), current_user, current_database(), "
                "current_setting('listen_addresses'), current_setting('max_connections')"
            )
            addr, user, db, listen, max_conn = cur.fetchone()
    assert (addr, user, listen, max_conn) == ("127.0.0.1", "paretotune", "127.0.0.1", "100")
    assert db == pg_url.rsplit("/", 1)[1]


def test_wrong_password_is_refused(pg_cluster: PostgresCluster) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(pg_cluster.url(password="not-the-password"), connect_timeout=10)


def test_connection_count_sees_an_open_connection(pg_cluster: PostgresCluster, pg_url: str) -> None:
    db = pg_url.rsplit("/", 1)[1]
    assert pg_cluster.connection_count(db) == 0
    before = pg_cluster.connection_count()
    conn = psycopg2.connect(pg_url, connect_timeout=10)
    try:
        assert pg_cluster.connection_count(db) == 1
        assert pg_cluster.connection_count() == before + 1
    finally:
        conn.close()
    assert wait_until(lambda: pg_cluster.connection_count(db) == 0)


def test_drop_database_closes_leftover_connections(pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.create_database("t_drop_me")
    leftover = psycopg2.connect(url, connect_timeout=10)
    try:
        pg_cluster.drop_database("t_drop_me")
        exists = _scalar(
            pg_cluster.url(), "SELECT count(*) FROM pg_database WHERE datname = 't_drop_me'"
        )
        assert exists == 0
    finally:
        leftover.close()


@pytest.mark.parametrize("name", ["Upper", "has-dash", "x; DROP DATABASE postgres", "", "a" * 64])
def test_database_names_are_checked(pg_cluster: PostgresCluster, name: str) -> None:
    with pytest.raises(ValueError, match="database name must match"):
        pg_cluster.create_database(name)


def test_a_second_cluster_keeps_data_across_stop_start_and_cleans_up(
    pg_cluster: PostgresCluster,
) -> None:
    # Its own cluster, so stopping it cannot disturb the session one (which must keep serving).
    cluster = PostgresCluster()
    try:
        cluster.start()
        assert cluster.port != pg_cluster.port
        url = cluster.create_database("keep")
        _scalar(url, "CREATE TABLE t (x int); INSERT INTO t VALUES (42); SELECT 1")

        cluster.stop()
        assert not cluster.is_running()
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(url, connect_timeout=3)
        cluster.start()
        assert _scalar(url, "SELECT x FROM t") == 42

        cluster.restart()
        assert cluster.is_running()
        assert _scalar(url, "SELECT sum(x) FROM t") == 42
        base = cluster.base_dir
        postmaster_pid = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    finally:
        cluster.cleanup()
    assert not base.exists()
    assert wait_until(lambda: _process_gone(postmaster_pid))
    assert _scalar(pg_cluster.url(), "SELECT 1") == 1


def test_storage_url_gives_a_fresh_store_outside_the_repo(storage_url: str, tmp_path: Path) -> None:
    if storage_url.startswith("sqlite"):
        path = Path(storage_url.removeprefix("sqlite:///"))
        assert path.is_absolute() and path.parent == tmp_path.resolve()
        assert not path.resolve().is_relative_to(Path(__file__).resolve().parents[1])
    else:
        assert storage_url.startswith("postgresql://")
    url = sa.make_url(storage_url)
    if url.drivername == "postgresql":
        # SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3; the project ships psycopg2.
        # Picking the driver is paretotune.storage's job; this test checks only the fixture.
        url = url.set(drivername="postgresql+psycopg2")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            assert sa.inspect(conn).get_table_names() == []
            conn.execute(sa.text("CREATE TABLE trial (n integer)"))
            conn.execute(sa.text("INSERT INTO trial VALUES (7)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT n FROM trial")).scalar_one() == 7
    finally:
        engine.dispose()
