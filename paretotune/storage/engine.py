"""SQLAlchemy engines from a URL, with the settings each backend needs, and password masking.

SQLite is the embedded default (WAL, a busy timeout, immediate write transactions so that
budget claims serialize). PostgreSQL is the shared store (pre-ping, a bounded pool per
process, a connect timeout so an unreachable server fails fast).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from paretotune.errors import StorageError

DEFAULT_URL = "sqlite:///paretotune.db"
#: seconds a new PostgreSQL connection may take before we call the store unreachable
CONNECT_TIMEOUT_S = 5
#: seconds SQLite waits on a locked database before giving up
SQLITE_BUSY_TIMEOUT_S = 60
#: per-engine pool bound for PostgreSQL: pool_size + max_overflow connections at most. A
#: process has two engines (ours and Optuna's), so it holds at most 2 * 2 = 4 connections,
#: and 20 workers stay under PostgreSQL's default max_connections of 100.
POOL_SIZE = 1
MAX_OVERFLOW = 1
MAX_CONNECTIONS_PER_PROCESS = 2 * (POOL_SIZE + MAX_OVERFLOW)

#: fallback for URLs this process never parsed: the password runs to the token's last "@"
_PASSWORD_RE = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>\S+)(?P<tail>@)")
_PASSWORD_KV_RE = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
#: passwords of every URL this process parsed, in every spelling (as written, decoded), so a
#: driver's message that echoes one is masked too; shorter ones would mask ordinary text
_SECRETS: set[str] = set()
MIN_SECRET_LEN = 4
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2")


def _written_password(url: str) -> str | None:
    """The password as written in ``url``: from the user's ':' to the last '@' of the URL."""
    _, sep, rest = url.partition("://")
    userinfo = rest[: rest.rfind("@")] if sep and "@" in rest else ""
    return userinfo.split(":", 1)[1] or None if ":" in userinfo else None


def remember_secrets(url: str) -> None:
    """Note the password of ``url`` so that ``mask`` hides it wherever it appears."""
    found = {_written_password(url)}
    try:
        found.add(make_url(url).password)  # type: ignore[arg-type]
    except ArgumentError:
        pass
    for secret in list(found):
        if secret:
            found |= {unquote(secret), unquote_plus(secret), quote(secret, safe=""), quote_plus(secret)}
    _SECRETS.update(s for s in found if s and len(s) >= MIN_SECRET_LEN)


def resolve_url(url: str | None) -> str:
    """``None`` means the embedded default, ``sqlite:///paretotune.db``."""
    if url is None:
        return DEFAULT_URL
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage: expected a database URL such as {DEFAULT_URL!r}, got {url!r}")
    remember_secrets(url)
    written = _written_password(url)
    if written is not None and "@" in written:
        raise StorageError(
            f"storage: the password in {mask(url)!r} contains '@'; URL-encode it (%40), since an "
            "'@' there ends the password"
        )
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"storage: {mask(url)!r} is not a database URL ({mask(str(exc))})") from None
    if parsed.drivername not in SUPPORTED_SCHEMES:
        raise StorageError(
            f"storage: scheme {parsed.drivername!r} of {mask(url)!r} is not supported; "
            f"use one of {list(SUPPORTED_SCHEMES)}"
        )
    return url


def driver_url(url: str) -> str:
    """The URL SQLAlchemy should use: a bare ``postgresql://`` means psycopg2 (the driver we
    ship), since SQLAlchemy 2.1 would otherwise pick psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def mask_url(url: str) -> str:
    """A URL as it may be shown: SQLAlchemy renders it with the password hidden."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = url
    return mask(shown)


def mask(text: str) -> str:
    """Replace every password in ``text`` with ``***``: those of the URLs this process has
    parsed (in any spelling), then any URL userinfo and ``password=...`` pair left."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _PASSWORD_RE.sub(lambda m: f"{m['head']}***{m['tail']}", text)
    return _PASSWORD_KV_RE.sub(lambda m: f"{m.group(1)}***", text)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def engine_kwargs(url: str) -> dict[str, Any]:
    """Keyword arguments for ``sqlalchemy.create_engine`` (also given to Optuna's RDBStorage)."""
    if is_sqlite(url):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {
        "pool_pre_ping": True,
        "pool_size": POOL_SIZE,
        "max_overflow": MAX_OVERFLOW,
        "pool_recycle": 300,
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "paretotune"},
    }


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def enable_wal(engine: sa.Engine) -> None:
    """WAL and a busy timeout on every new SQLite connection of ``engine``."""
    sa.event.listen(engine, "connect", _sqlite_pragmas)


def _driver_autocommit(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself


def _begin_immediate(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def serialize_sqlite_writes(engine: sa.Engine) -> None:
    """Every transaction of ``engine`` starts with ``BEGIN IMMEDIATE``: read-then-write
    sequences (a budget claim, Optuna popping a queued trial) serialize instead of racing.

    SQLite ignores ``SELECT ... FOR UPDATE``, so without this two processes can both see a
    queued trial as WAITING and both run it. Existing pooled connections are dropped so that
    every connection gets the hooks.
    """
    sa.event.listen(engine, "connect", _driver_autocommit)
    sa.event.listen(engine, "begin", _begin_immediate)
    engine.dispose()


def create_engine(url: str | None) -> sa.Engine:
    """An engine for our own tables (on SQLite: WAL, and serialized writes)."""
    url = resolve_url(url)
    engine = sa.create_engine(driver_url(url), **engine_kwargs(url))
    if is_sqlite(url):
        enable_wal(engine)
        serialize_sqlite_writes(engine)
    return engine


def check_reachable(engine: sa.Engine, shown_url: str) -> None:
    """Connect once; an unreachable or refusing store becomes a StorageError, password masked."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise StorageError(
            f"cannot reach the study store at {mask(shown_url)}: "
            f"{mask(detail)}"
        ) from None
