"""Riding out store outages: retry with exponential backoff on errors a reconnect can cure.

The engines' pre-ping replaces dead pooled connections; this retries the operation itself.
Each process also remembers when it last failed to reach the store, so the reaper does not
mistake everyone's missed heartbeats during an outage for dead workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from optuna.exceptions import StorageInternalError

from paretotune.errors import StorageError
from paretotune.storage.engine import mask

log = logging.getLogger(__name__)
T = TypeVar("T")

#: how long a worker keeps retrying the store before it spools and gives up
DEFAULT_RETRY_WINDOW_S = 120.0
MAX_BACKOFF_S = 5.0


#: errors no reconnect will cure, even though drivers raise them as OperationalError
PERMANENT_MARKERS = ("password authentication failed", "authentication failed", "does not exist",
                     "no password supplied", "permission denied")


def is_transient(exc: BaseException) -> bool:
    """Errors that a reconnect can cure: lost connections, a restarting server, a busy SQLite.
    A wrong password or a missing database is permanent and fails at once."""
    if any(marker in str(exc) for marker in PERMANENT_MARKERS):
        return False
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, StorageInternalError):
        return True
    if isinstance(exc, StorageError) and "cannot reach" in str(exc):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and isinstance(cause, (sa.exc.OperationalError, sa.exc.InterfaceError))


_last_failure = 0.0


def note_store_failure() -> None:
    """Remember that this process just failed to reach the store."""
    global _last_failure
    _last_failure = time.monotonic()


def store_healthy_for() -> float:
    """Seconds since this process last failed to reach the store (inf if never)."""
    return float("inf") if _last_failure == 0.0 else time.monotonic() - _last_failure


def retry(fn: Callable[..., T], *args: Any, what: str, window_s: float = DEFAULT_RETRY_WINDOW_S, **kwargs: Any) -> T:
    """Call ``fn``; on a transient store error retry with backoff for up to ``window_s``."""
    deadline = time.monotonic() + window_s
    delay = 0.1
    failures = 0
    while True:
        try:
            result = fn(*args, **kwargs)
            if failures:
                log.warning("store is back: %s succeeded after %d retries", what, failures)
            return result
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            failures += 1
            note_store_failure()
            if failures == 1 or failures % 10 == 0:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("store unavailable during %s (%s); retrying for up to %.0f s",
                            what, mask(first), deadline - time.monotonic())
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
