"""A throwaway PostgreSQL cluster for tests: its own data dir, port and password.

The suite never depends on a system-wide cluster. Each run creates a cluster in a temp dir,
listening only on 127.0.0.1 with password (scram-sha-256) auth, tuned for speed rather than
durability, and removes it afterwards (at fixture teardown, at exit, or on SIGTERM). A cluster
left behind by a killed run is reaped by the next one.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from urllib.parse import quote

import psycopg2
from psycopg2 import sql

SUPERUSER = "paretotune"
RUN_AS = "postgres"  # system user that owns the data dir when we are root
_PREFIX = "paretotune-pg-"
_NEEDED = ("initdb", "pg_ctl", "postgres")
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PG_VERSION_DIR = re.compile(r"/(\d+)(?:\.(\d+))?/bin$")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed (see scripts/ensure-postgres.sh)."""


def find_bindir() -> Path | None:
    """Newest dir holding initdb, pg_ctl and postgres: /usr/lib/postgresql/*/bin, then PATH."""

    def complete(d: Path) -> bool:
        return all(os.access(d / name, os.X_OK) for name in _NEEDED)

    def version(d: str) -> tuple[int, int]:
        m = _PG_VERSION_DIR.search(d)
        return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if complete(Path(d)):
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and complete(Path(initdb).resolve().parent):
        return Path(initdb).resolve().parent
    return None


def missing_requirement() -> str | None:
    """Why a cluster cannot be started here, or None if it can."""
    if find_bindir() is None:
        return (
            "the PostgreSQL server binaries (initdb, pg_ctl, postgres) under "
            "/usr/lib/postgresql/*/bin or on PATH; install them with "
            "`bash scripts/ensure-postgres.sh` (Debian package `postgresql`)"
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "`runuser` (util-linux), to run PostgreSQL as a non-root user while we are root"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_env() -> dict[str, str]:
    """The environment without PG* variables that could point the tools at another cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env.pop("LANG", None)
    return env


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresCluster:
    """One throwaway cluster. Not thread safe; meant for one pytest session.

    Only the process that created the cluster may stop or remove it: a forked child (a worker
    pool in a test) that runs atexit or a SIGTERM handler leaves it alone.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        start_timeout: float = 30.0,
        bindir: Path | None = None,
    ) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PostgresUnavailable(missing_requirement() or "PostgreSQL not found")
        self.bindir = found
        self.max_connections = max_connections
        self.start_timeout = start_timeout
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.host = "127.0.0.1"
        self._owner_pid = os.getpid()
        self._as_root = os.geteuid() == 0
        self._base: Path | None = None
        self._initialized = False

    # -- paths -------------------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        if self._base is None:
            raise RuntimeError("the cluster has no directory yet: call start() first")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first use, then start it and wait until it accepts connections."""
        if not self._initialized:
            reap_stale_clusters()
            self._create()
            attempts = 3  # the port picked may be taken between bind(0) and the server's bind
        else:
            attempts = 1
        for attempt in range(attempts):
            try:
                self._pg_ctl(
                    "start", "-w", "-t", str(int(self.start_timeout)), "-l", str(self.log_file)
                )
                return
            except RuntimeError:
                if attempt + 1 < attempts and "could not bind" in self._log_tail():
                    self.port = free_port()
                    self._write_conf()
                    continue
                raise

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs (mode: smart, fast or immediate)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"stop mode must be smart, fast or immediate, got {mode!r}")
        if self._initialized and self.is_running():
            self._pg_ctl("stop", "-w", "-t", str(int(self.start_timeout)), "-m", mode)

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        if not self._initialized:
            return False
        proc = self._run(
            [str(self.bindir / "pg_ctl"), "status", "-D", str(self.data_dir)], check=False
        )
        return proc.returncode == 0

    def cleanup(self) -> None:
        """Stop the server and remove its directory. Safe to call more than once."""
        if os.getpid() != self._owner_pid or self._base is None:
            return
        try:
            try:
                self.stop("fast")
            except (RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        finally:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
            self._initialized = False

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- URLs and databases --------------------------------------------------------------------

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """postgresql:// URL for the superuser; pass a password to get a wrong one on purpose."""
        pw = self.password if password is None else password
        return f"postgresql://{SUPERUSER}:{quote(pw, safe='')}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        self._check_name(name)
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, closing connections that a test left open."""
        self._check_name(name)
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def connection_count(self, database: str | None = None) -> int:
        """Open client connections (all databases, or one), not counting the one asking."""
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        params: tuple[str, ...] = ()
        if database is not None:
            query += " AND datname = %s"
            params = (database,)
        with contextlib.closing(psycopg2.connect(self.url(), connect_timeout=10)) as conn:
            with conn.cursor() as cur:
                cur.execute(query, params)
                (count,) = cur.fetchone() or (0,)
        return int(count)

    # -- internals ---------------------------------------------------------------------------

    def _create(self) -> None:
        self._base = Path(tempfile.mkdtemp(prefix=_PREFIX))
        try:
            self._init_data_dir(self._base)
        except BaseException:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
            raise
        self.port = free_port()
        self._write_conf()
        self._initialized = True
        register_cleanup(self)

    def _init_data_dir(self, base: Path) -> None:
        """initdb into base/data; the password reaches initdb through a file, never argv."""
        owner = base / "owner.pid"  # lets a later run reap this cluster if we are killed
        owner.write_text(str(os.getpid()))
        self.socket_dir.mkdir()
        pwfile = base / "pwfile"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            uid, gid = _ensure_system_user(RUN_AS)
            for path in (base, self.socket_dir, pwfile, owner):
                os.chown(path, uid, gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        pwfile.unlink()

    def _write_conf(self) -> None:
        """Settings in conf.d-style include file, rewritten when the port changes."""
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": str(self.max_connections),
            "password_encryption": "'scram-sha-256'",
            # Speed over durability: the cluster is thrown away after the run.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "wal_level": "minimal",
            "max_wal_senders": "0",
            "checkpoint_timeout": "'1h'",
            "shared_buffers": "'64MB'",
            "jit": "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
        }
        include = self.data_dir / "paretotune-test.conf"
        include.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        conf = self.data_dir / "postgresql.conf"
        line = "include = 'paretotune-test.conf'\n"
        if line not in conf.read_text():
            with conf.open("a") as f:
                f.write(line)
        if self._as_root:
            uid, gid = _ensure_system_user(RUN_AS)
            os.chown(include, uid, gid)

    def _pg_ctl(self, *args: str) -> None:
        self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args],
            timeout=self.start_timeout + 15,
        )

    def _run(
        self, argv: list[str], *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        if self._as_root:
            argv = ["runuser", "-u", RUN_AS, "--", *argv]
        proc = subprocess.run(
            argv,
            cwd=self._base or tempfile.gettempdir(),
            env=_pg_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited with {proc.returncode}\n"
                f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}\n"
                f"server log (tail):\n{self._log_tail()}"
            )
        return proc

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, RuntimeError):
            return "(no server log)"

    def _admin(self, statement: sql.Composable) -> None:
        conn = psycopg2.connect(self.url(), connect_timeout=10)
        try:
            conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    @staticmethod
    def _check_name(name: str) -> None:
        if not _DB_NAME.match(name):
            raise ValueError(
                f"database name must match {_DB_NAME.pattern} (lowercase, at most 63 chars), "
                f"got {name!r}"
            )


def _ensure_system_user(name: str) -> tuple[int, int]:
    """uid and gid of a system user, created (no login, no home) if missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
        )
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


# -- cleanup on exit, on SIGTERM, and after a killed run ------------------------------------

_live: list[PostgresCluster] = []
_hooks_installed = False


def register_cleanup(cluster: PostgresCluster) -> None:
    """Stop the cluster at interpreter exit and on SIGTERM (CI cancelling a job)."""
    global _hooks_installed
    _live.append(cluster)
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_cleanup_all)
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)


def _cleanup_all() -> None:
    while _live:
        with contextlib.suppress(Exception):
            _live.pop().cleanup()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def reap_stale_clusters() -> None:
    """Stop and remove clusters whose creating process is gone (a run killed with SIGKILL)."""
    for base in Path(tempfile.gettempdir()).glob(_PREFIX + "*"):
        try:
            owner = int((base / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        bindir = find_bindir()
        if bindir is not None and (base / "data" / "postmaster.pid").exists():
            argv = [str(bindir / "pg_ctl"), "-D", str(base / "data"), "stop", "-m", "immediate"]
            if os.geteuid() == 0:
                argv = ["runuser", "-u", RUN_AS, "--", *argv]
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    argv,
                    cwd=tempfile.gettempdir(),
                    env=_pg_env(),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=30,
                )
        shutil.rmtree(base, ignore_errors=True)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.05) -> bool:
    """Poll until predicate() is true or the timeout passes; connection counts lag a little."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
