"""The same storage tests on SQLite and on the real PostgreSQL (the `storage_url` fixture)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from paretotune.errors import StorageError, StudyError
from paretotune.storage import StopKind, StudyStop, StudyStore, mask, resolve_url


def test_default_url_is_embedded_sqlite() -> None:
    assert resolve_url(None) == "sqlite:///paretotune.db"


def test_spec_round_trip_and_names(storage_url: str) -> None:
    store = StudyStore(storage_url)
    spec = {"version": 1, "objectives": {"accuracy": "max"}, "nested": {"a": [1, 2]}}
    assert store.save_spec("s1", spec) is True
    assert store.load_spec("s1") == spec
    assert store.load_spec("nope") is None
    assert store.study_names() == ["s1"]
    assert store.save_spec("s1", {"other": True}) is False  # names are unique: the first row stays
    assert store.load_spec("s1") == spec


def test_claims_never_exceed_the_budget_under_contention(storage_url: str) -> None:
    store = StudyStore(storage_url)
    store.save_spec("s", {})
    granted: list[int] = []
    lock = threading.Lock()

    def grab() -> None:
        mine = StudyStore(storage_url)  # its own engine and pool, like another process
        while True:
            claim = mine.claim("s", threading.current_thread().name, target=25)
            if claim is None:
                return
            with lock:
                granted.append(claim)
            mine.finish_claim(claim, completed=True)

    threads = [threading.Thread(target=grab, name=f"t{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 25 and len(set(granted)) == 25
    assert store.claim_counts("s") == {"active": 0, "done": 25, "released": 0}


def test_released_claims_return_to_the_budget(storage_url: str) -> None:
    store = StudyStore(storage_url)
    store.save_spec("s", {})
    a = store.claim("s", "w", target=1)
    assert a is not None and store.claim("s", "w", target=1) is None
    store.finish_claim(a, completed=False)
    b = store.claim("s", "w", target=1)
    assert b is not None and b != a
    store.stop_study("s", "because")
    store.stop_study("s", "a later stop does not replace the first", StopKind.FINISHED)
    store.finish_claim(b, completed=False)
    assert store.claim("s", "w", target=5) is None and store.stopped_reason("s") == "because"
    assert store.stopped("s") == StudyStop(StopKind.ABORTED, "because") and store.stopped("s").is_error
    store.clear_stop("s")
    assert store.stopped("s") is None
    store.stop_study("s", "every config of the space was evaluated", StopKind.FINISHED)
    assert store.stopped("s") == StudyStop(StopKind.FINISHED, "every config of the space was evaluated")
    assert not store.stopped("s").is_error
    with pytest.raises(StudyError, match="does not exist"):
        store.claim("other", "w", target=1)


def _stale_claim(storage_url: str, target: int) -> tuple[StudyStore, int, dict]:
    """A store with one claim of study "s" that has gone stale (grace 0.01 s), and that claim."""
    store = StudyStore(storage_url)
    store.save_spec("s", {})
    c = store.claim("s", "w", target=target)
    assert c is not None
    time.sleep(0.05)
    (stale,) = store.stale_claims("s", grace_s=0.01)
    assert stale["id"] == c
    return store, c, stale


def test_stale_claims_are_released_once(storage_url: str) -> None:
    store, c, stale = _stale_claim(storage_url, target=3)
    assert store.take_over_if_stale(c, stale["heartbeat_at"]) is True
    assert store.take_over_if_stale(c, stale["heartbeat_at"]) is False  # a second reaper loses
    d = store.claim("s", "w", target=3)
    store.heartbeat([d])
    assert store.stale_claims("s", grace_s=5.0) == []


def test_a_claim_taken_over_for_reaping_keeps_its_slot(storage_url: str) -> None:
    # a slow worker may complete its trial while a reaper settles the claim: until it is
    # settled, no other trial gets the slot, so the budget is never exceeded
    store, c, stale = _stale_claim(storage_url, target=1)
    assert store.take_over_if_stale(c, stale["heartbeat_at"])
    assert store.claim("s", "other", target=1) is None
    assert store.stale_claims("s", grace_s=0.01 + 0.04) == []  # the take-over is a heartbeat
    store.finish_claim_forced(c, completed=True)
    assert store.claim("s", "other", target=1) is None and store.claim_counts("s")["done"] == 1


def test_measurements_are_kept_once_per_trial(storage_url: str) -> None:
    store = StudyStore(storage_url)
    store.record_measurement("s", 3, "abc", '{"x":1}', {"accuracy": 0.5}, {"stable": True})
    store.record_measurement("s", 3, "abc", '{"x":1}', {"accuracy": 0.9}, {})  # ignored, not overwritten
    rows = store.measurements("s")
    assert len(rows) == 1 and rows[0]["metrics"] == {"accuracy": 0.5} and rows[0]["details"] == {"stable": True}


def test_sqlite_uses_wal(tmp_path) -> None:
    store = StudyStore(f"sqlite:///{tmp_path}/w.db")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_mask_hides_passwords_everywhere() -> None:
    text = "connect postgresql://alice:s3cr%40t@db:5432/x failed; password=hunter2 dsn"
    masked = mask(text)
    assert "s3cr" not in masked and "hunter2" not in masked
    assert "postgresql://alice:***@db:5432/x" in masked


def test_unsupported_scheme_is_named() -> None:
    with pytest.raises(StorageError, match="scheme 'mysql' .* not supported"):
        StudyStore("mysql://u:pw@localhost/db")


@pytest.mark.postgres
def test_wrong_password_is_a_clear_masked_error(pg_cluster, pg_url) -> None:
    bad = pg_url.replace(pg_cluster.password, "Wr0ngPassw0rd")
    with pytest.raises(StorageError) as err:
        StudyStore(bad)
    msg = str(err.value)
    assert "Wr0ngPassw0rd" not in msg and pg_cluster.password not in msg
    assert "***" in msg and "password authentication failed" in msg


def test_unreachable_database_fails_fast_and_clearly() -> None:
    # a closed port on loopback: refused at once; the message names the (masked) URL
    t0 = time.monotonic()
    with pytest.raises(StorageError) as err:
        StudyStore("postgresql://u:topsecret@127.0.0.1:9/db")
    assert time.monotonic() - t0 < 10
    assert "cannot reach the study store at postgresql://u:***@127.0.0.1:9/db" in str(err.value)
    assert "topsecret" not in str(err.value)


def test_unreachable_database_from_the_cli_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "paretotune.cli", "status", "x", "--storage", "postgresql://u:topsecret@127.0.0.1:9/db"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "topsecret" not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("error: cannot reach the study store")


@pytest.mark.postgres
def test_a_wrong_password_is_not_retried(pg_cluster, pg_url) -> None:
    from paretotune.storage import retry

    bad = pg_url.replace(pg_cluster.password, "Wr0ngPassw0rd")
    t0 = time.monotonic()
    with pytest.raises(StorageError):
        retry(StudyStore, bad, what="connect", window_s=60)
    assert time.monotonic() - t0 < 10


def test_a_store_from_before_stop_kinds_gets_the_column_and_keeps_its_stops(storage_url: str) -> None:
    """A study table created without ``stopped_kind`` (paretotune before stops had kinds) is
    upgraded in place when opened; its old stops read as they were meant."""
    import sqlalchemy as sa

    StudyStore(storage_url).save_spec("old-finished", {})
    StudyStore(storage_url).save_spec("old-failed", {})
    engine = sa.create_engine(storage_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE pt_studies DROP COLUMN stopped_kind"))
        conn.execute(sa.text("UPDATE pt_studies SET stopped_reason = 'finished: every config of the "
                             "space was evaluated' WHERE name = 'old-finished'"))
        conn.execute(sa.text("UPDATE pt_studies SET stopped_reason = '30 trials failed' WHERE name = 'old-failed'"))
    engine.dispose()
    store = StudyStore(storage_url)
    assert store.stopped("old-finished").kind is StopKind.FINISHED
    assert store.stopped("old-failed") == StudyStop(StopKind.ABORTED, "30 trials failed")
