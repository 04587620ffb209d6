"""Entry points of the processes paretotune starts: ``python -m paretotune.workers._entry``.

Fresh interpreters rather than forks or multiprocessing's spawn, so a user's script is never
re-imported as ``__main__`` and no lock or thread pool is inherited mid-use.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from paretotune.errors import InvalidConfigError, StudyError
from paretotune.space import Config

log = logging.getLogger("paretotune.workers")


def _normalize(result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An evaluator may return a Measurement (``.metrics``/``.details``) or a plain mapping."""
    if hasattr(result, "metrics") and isinstance(result.metrics, Mapping):
        return dict(result.metrics), dict(getattr(result, "details", {}) or {})
    if isinstance(result, Mapping):
        return dict(result), {}
    raise TypeError(
        f"the evaluator must return a mapping of metric name to number (or a Measurement), "
        f"got {type(result).__name__}"
    )


def trial_process(fd: int) -> None:
    """The trial process: a fresh interpreter (not a fork, not a re-import of the user's
    ``__main__``) that receives the pickled evaluator, then one config per message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    conn = Connection(fd)
    load_error: str | None = None
    try:
        # loading imports the task's libraries (torch): work, not to run beside a timed window
        from paretotune.evaluators.slot import timing_slot

        with timing_slot().shared():
            evaluator = cloudpickle.loads(conn.recv_bytes())
    except Exception as exc:
        # answer every config with the reason (exiting at once would read as "exited with code 0")
        load_error = f"cannot load the evaluator in the trial process: {type(exc).__name__}: {exc}"
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        if load_error is not None:
            conn.send(("error", load_error))
            continue
        try:
            metrics, details = _normalize(evaluator(Config.from_json(msg)))
            conn.send(("ok", metrics, details))
        except InvalidConfigError as exc:
            conn.send(("invalid", str(exc)))
        except BaseException as exc:  # a trial's failure is data, not a crash of the worker
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            log.debug("trial raised:\n%s", "".join(tb))
            conn.send(("error", f"{type(exc).__name__}: {exc}".strip()))


def pool_worker() -> None:
    """A local-pool worker: its arguments arrive pickled on stdin."""
    from paretotune.workers.lifecycle import worker_id
    from paretotune.workers.loop import raise_on_sigterm, run_worker

    raise_on_sigterm()
    args = pickle.loads(sys.stdin.buffer.read())
    evaluator = cloudpickle.loads(args.pop("evaluator"))
    try:
        run_worker(args.pop("storage"), args.pop("study"), evaluator, worker=worker_id("pool"), **args)
    except StudyError as exc:
        log.error("%s", exc)
        sys.exit(3)
    except KeyboardInterrupt:  # Ctrl-C or the pool's SIGTERM: the running trial is recorded
        sys.exit(130)


def watch_parent(interval_s: float = 1.0) -> None:
    """Exit when the process that started us is gone: no orphaned workers or trials."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="paretotune-parent-watch", daemon=True).start()


if __name__ == "__main__":
    watch_parent()
    logging.basicConfig(
        level=os.environ.get("PARETOTUNE_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(process)d %(name)s: %(message)s",
    )
    if sys.argv[1] == "trial":
        trial_process(int(sys.argv[2]))
    elif sys.argv[1] == "worker":
        pool_worker()
    else:
        raise SystemExit(f"unknown entry point {sys.argv[1]!r}")
