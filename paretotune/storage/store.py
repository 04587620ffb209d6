"""`StudyStore`: Optuna's RDB storage plus the project's own tables, on one database.

Invariants:
- Thread- and process-safe: every method is one short transaction; several processes on
  several machines may share a store.
- Budget claims serialize (a locked study row on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
  so N workers never complete more trials than the budget.
- A measurement row, once written, is never changed or deleted.
- Nothing returned or raised here contains the database password.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from paretotune.errors import StorageError, StudyError
from paretotune.storage.engine import (
    check_reachable,
    create_engine,
    driver_url,
    enable_wal,
    engine_kwargs,
    is_sqlite,
    mask,
    mask_url,
    resolve_url,
    serialize_sqlite_writes,
)

log = logging.getLogger(__name__)

metadata = sa.MetaData()

studies_table = sa.Table(
    "pt_studies",
    metadata,
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("stopped_reason", sa.Text, nullable=True),
    sa.Column("target", sa.Integer, nullable=True),
    sa.Column("stopped_kind", sa.String(16), nullable=True),
    # the fleet: NULL until `submit` opens the study to every `paretotune worker` of the store
    sa.Column("fleet_state", sa.String(16), nullable=True),
    sa.Column("priority", sa.Integer, nullable=True),
    sa.Column("submitted_at", sa.Float, nullable=True),
    #: JSON {"engines": [...], "gpu": bool, "tags": [...]}: what a worker needs to run its trials
    sa.Column("requires", sa.Text, nullable=True),
)

#: One row per fleet worker (`paretotune worker` without --study): what it can run, what it
#: runs now, and when it last said so.
workers_table = sa.Table(
    "pt_workers",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("capabilities", sa.Text, nullable=False),  # JSON: cpus, gpus, engines, tags
    sa.Column("study", sa.String(512), nullable=True),
    sa.Column("trial_number", sa.Integer, nullable=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("stopped_at", sa.Float, nullable=True),
)


class FleetState(str, Enum):
    """A submitted study's place in the fleet: workers take trials only from OPEN ones."""

    OPEN = "open"
    CANCELLED = "cancelled"  # no new trials; running ones finish and are recorded
    DONE = "done"  # its budget is met, or it stopped


class StopKind(str, Enum):
    """Why a study stopped taking trials: a normal end, or a reason to tell the user."""

    FINISHED = "finished"  # nothing left to try (every config of a finite space was evaluated)
    FAILED = "failed"  # max_failures trials failed
    ABORTED = "aborted"  # a fatal problem: an evaluator that never returns a needed metric, say


@dataclass(frozen=True)
class StudyStop:
    """A study's stop as stored: its kind and the sentence that explains it."""

    kind: StopKind
    reason: str

    @property
    def is_error(self) -> bool:
        return self.kind is not StopKind.FINISHED

    def __str__(self) -> str:
        return self.reason

#: One row per budget slot a worker holds. ``active`` while its trial runs, then ``done``
#: (the trial completed: it counts against the budget) or ``released`` (failed or invalid:
#: the slot goes back).
claims_table = sa.Table(
    "pt_claims",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study", sa.String(512), nullable=False, index=True),
    sa.Column("worker", sa.String(256), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("trial_number", sa.Integer, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)

measurements_table = sa.Table(
    "pt_measurements",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study", sa.String(512), nullable=False, index=True),
    sa.Column("trial_number", sa.Integer, nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("study", "trial_number", name="uq_pt_measurements_trial"),
)

#: One row per config measured by one fresh process of a confirmation run (`Study.confirm`):
#: a trial re-measured, or the baseline config at a trial's batch size and threads (its row
#: names the baseline trial). Written as each measurement finishes; never changed.
confirmations_table = sa.Table(
    "pt_confirmations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study", sa.String(512), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("process", sa.Integer, nullable=False),
    sa.Column("trial_number", sa.Integer, nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=True),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

ACTIVE, DONE, RELEASED = "active", "done", "released"


def _add_new_columns(engine: sa.engine.Engine) -> None:
    """Add the nullable columns a newer version declares to tables an older one created (the
    only schema change these tables have had: ``create_all`` adds whole tables only)."""
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise StorageError(f"table {table.name} lacks the column {column.name}, which cannot be added")
            kind = column.type.compile(dialect=engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))
            except sa.exc.SQLAlchemyError:  # another process added it first
                if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                    raise
            log.info("store: added column %s.%s", table.name, column.name)


def _wrap(exc: Exception, what: str) -> StorageError:
    return StorageError(f"{what}: {mask(str(exc).splitlines()[0])}")


def _check_sqlite_path(url: str, create: bool) -> None:
    """One clear line for the SQLite paths that would otherwise fail deep in the driver."""
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.is_dir():
        raise StorageError(f"storage: {url!r} names a directory, not an SQLite database file")
    if not path.exists():
        if not create:
            raise StorageError(
                f"no study store at {url!r}: the SQLite file {str(path)!r} does not exist "
                "(this command reads a store and never creates one; check the path or --storage)"
            )
        if not path.parent.is_dir():
            raise StorageError(f"storage: the directory of {url!r} ({str(path.parent)!r}) does not exist")
    if create and path.exists() and not os.access(path, os.W_OK):
        raise StorageError(f"storage: the SQLite file {str(path)!r} is read-only")
    if create and not os.access(path.parent, os.W_OK):
        raise StorageError(
            f"storage: the directory {str(path.parent)!r} is read-only (SQLite writes its journal "
            "beside the database file)"
        )


class StudyStore:
    """One study store, addressed by URL (``None`` = ``sqlite:///paretotune.db``)."""

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        """``create=False`` (loading a study, read-only commands) never creates a store: a
        missing SQLite file or a database without paretotune's tables is an error."""
        self.url = resolve_url(url)
        if is_sqlite(self.url):
            _check_sqlite_path(self.url, create)
        self.engine = create_engine(self.url)
        check_reachable(self.engine, self.url)
        if not create and not sa.inspect(self.engine).has_table(studies_table.name):
            self.engine.dispose()
            raise StorageError(f"{self.masked_url} holds no paretotune studies (no table {studies_table.name})")
        try:
            metadata.create_all(self.engine)  # only adds tables a newer version introduced
            _add_new_columns(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise _wrap(exc, f"cannot create tables in {self.masked_url}") from None
        self._optuna: Any = None

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"StudyStore({self.masked_url!r})"

    def optuna_storage(self) -> Any:
        """Optuna's RDBStorage on the same database (created once per store object)."""
        if self._optuna is None:
            import optuna

            try:
                storage = optuna.storages.RDBStorage(driver_url(self.url), engine_kwargs=engine_kwargs(self.url))
            except Exception as exc:  # optuna wraps driver errors in several ways
                raise _wrap(exc, f"cannot open Optuna storage at {self.masked_url}") from None
            if is_sqlite(self.url):
                enable_wal(storage.engine)
                serialize_sqlite_writes(storage.engine)
            self._optuna = storage
        return self._optuna

    def dispose(self) -> None:
        self.engine.dispose()
        if self._optuna is not None:
            self._optuna.engine.dispose()

    # -- study specs ----------------------------------------------------------------------------
    def save_spec(self, name: str, spec: dict[str, Any]) -> bool:
        """Store a new study's spec; False when another process stored that study first."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    studies_table.insert().values(
                        name=name, spec=json.dumps(spec, sort_keys=True), created_at=time.time()
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def load_spec(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(studies_table.c.spec).where(studies_table.c.name == name)
            ).first()
        return None if row is None else json.loads(row[0])

    def study_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(studies_table.c.name).order_by(studies_table.c.created_at))]

    def set_target(self, name: str, n_trials: int) -> None:
        """The budget of completed trials, so workers joining later know when to stop."""
        with self.engine.begin() as conn:
            conn.execute(studies_table.update().where(studies_table.c.name == name).values(target=n_trials))

    def target(self, name: str) -> int | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(studies_table.c.target).where(studies_table.c.name == name)).first()
        return None if row is None else row[0]

    def stop_study(self, name: str, reason: str, kind: StopKind = StopKind.ABORTED) -> None:
        """Mark the study stopped: every worker stops claiming. The first stop stays."""
        with self.engine.begin() as conn:
            conn.execute(
                studies_table.update()
                .where(studies_table.c.name == name, studies_table.c.stopped_reason.is_(None))
                .values(stopped_reason=reason, stopped_kind=StopKind(kind).value)
            )

    def clear_stop(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(studies_table.update().where(studies_table.c.name == name)
                         .values(stopped_reason=None, stopped_kind=None))

    def stopped(self, name: str) -> StudyStop | None:
        """The study's stop, or None while it takes trials."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(studies_table.c.stopped_reason, studies_table.c.stopped_kind)
                .where(studies_table.c.name == name)
            ).first()
        if row is None or row[0] is None:
            return None
        reason, kind = row
        if kind is None:  # written before stops had kinds, when a finished one began "finished:"
            kind = StopKind.FINISHED if reason.startswith("finished:") else StopKind.ABORTED
        return StudyStop(StopKind(kind), reason)

    def stopped_reason(self, name: str) -> str | None:
        stop = self.stopped(name)
        return None if stop is None else stop.reason

    # -- the fleet ---------------------------------------------------------------------------------
    def submit(self, name: str, priority: int, requires: dict[str, Any]) -> None:
        """Open the study to the fleet (again, after a cancel), with its priority and needs."""
        with self.engine.begin() as conn:
            done = conn.execute(studies_table.update().where(studies_table.c.name == name).values(
                fleet_state=FleetState.OPEN.value, priority=int(priority), submitted_at=time.time(),
                requires=json.dumps(requires, sort_keys=True),
            )).rowcount
        if not done:
            raise StudyError(f"study {name!r} does not exist in {self.masked_url}")

    def set_fleet(self, name: str, *, state: FleetState | None = None, priority: int | None = None) -> None:
        """Change a submitted study's state or priority (StudyError when it was never submitted)."""
        values: dict[str, Any] = {}
        if state is not None:
            values["fleet_state"] = FleetState(state).value
        if priority is not None:
            values["priority"] = int(priority)
        with self.engine.begin() as conn:
            done = conn.execute(studies_table.update().where(
                studies_table.c.name == name, studies_table.c.fleet_state.is_not(None)).values(**values)).rowcount
        if not done:
            raise StudyError(f"study {name!r} in {self.masked_url} was never submitted to the fleet "
                             f"(`paretotune submit`); submitted: {[s['name'] for s in self.fleet_studies()]}")

    def fleet_studies(self, state: FleetState | None = None) -> list[dict[str, Any]]:
        """The submitted studies (optionally in one state), each with its active and done
        claim counts, oldest submission first."""
        c = studies_table.c
        query = sa.select(c.name, c.fleet_state, c.priority, c.submitted_at, c.requires, c.target,
                          c.stopped_reason).where(c.fleet_state.is_not(None))
        if state is not None:
            query = query.where(c.fleet_state == FleetState(state).value)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.submitted_at)).all()
            counts = (sa.select(claims_table.c.study, claims_table.c.state, sa.func.count())
                      .where(claims_table.c.study.in_([r.name for r in rows]))
                      .group_by(claims_table.c.study, claims_table.c.state))
            tally: dict[str, dict[str, int]] = {}
            for study, claim_state, n in (conn.execute(counts).all() if rows else ()):
                tally.setdefault(study, {})[claim_state] = n
        return [
            {"name": r.name, "state": FleetState(r.fleet_state), "priority": r.priority or 0,
             "submitted_at": r.submitted_at, "requires": json.loads(r.requires or "{}"), "target": r.target,
             "stopped_reason": r.stopped_reason,
             "running": tally.get(r.name, {}).get(ACTIVE, 0), "done": tally.get(r.name, {}).get(DONE, 0)}
            for r in rows
        ]

    def register_worker(self, worker: str, host: str, pid: int, capabilities: dict[str, Any]) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(workers_table.insert().values(
                id=worker, host=host, pid=pid, capabilities=json.dumps(capabilities, sort_keys=True),
                started_at=now, heartbeat_at=now))

    def worker_beat(self, worker: str, study: str | None = None, trial_number: int | None = None) -> None:
        """The worker is alive and runs ``trial_number`` of ``study`` (None: idle)."""
        with self.engine.begin() as conn:
            conn.execute(workers_table.update().where(workers_table.c.id == worker).values(
                heartbeat_at=time.time(), study=study, trial_number=trial_number))

    def retire_worker(self, worker: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(workers_table.update().where(workers_table.c.id == worker).values(
                stopped_at=time.time(), study=None, trial_number=None))

    def fleet_workers(self, live_within_s: float | None = None) -> list[dict[str, Any]]:
        """Workers that have not stopped, newest heartbeat first (within ``live_within_s``)."""
        c = workers_table.c
        query = sa.select(workers_table).where(c.stopped_at.is_(None))
        if live_within_s is not None:
            query = query.where(c.heartbeat_at >= time.time() - live_within_s)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.heartbeat_at.desc())).mappings().all()
        return [{**dict(r), "capabilities": json.loads(r["capabilities"])} for r in rows]

    # -- budget claims ----------------------------------------------------------------------------
    def claim(self, study: str, worker: str, target: int) -> int | None:
        """Take one budget slot if ``done + active < target`` and the study isn't stopped.

        Returns the claim id, or None when the budget is spoken for.
        """
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(studies_table.c.stopped_reason)
                .where(studies_table.c.name == study)
                .with_for_update()
            ).first()
            if row is None:
                raise StudyError(f"study {study!r} does not exist in {self.masked_url}")
            if row[0] is not None:
                return None
            taken = conn.execute(
                sa.select(sa.func.count())
                .select_from(claims_table)
                .where(claims_table.c.study == study, claims_table.c.state.in_([ACTIVE, DONE]))
            ).scalar_one()
            if taken >= target:
                return None
            result = conn.execute(
                claims_table.insert().values(
                    study=study, worker=worker, state=ACTIVE, created_at=now, heartbeat_at=now
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def bind_claim(self, claim_id: int, trial_number: int) -> bool:
        """Bind an active claim to its asked trial. False when the claim is no longer active: a
        reaper took its budget slot back (its worker went silent past the grace period)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                claims_table.update()
                .where(claims_table.c.id == claim_id, claims_table.c.state == ACTIVE)
                .values(trial_number=trial_number)
            )
            return bool(result.rowcount)

    def finish_claim(self, claim_id: int, *, completed: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                claims_table.update()
                .where(claims_table.c.id == claim_id, claims_table.c.state == ACTIVE)
                .values(state=DONE if completed else RELEASED)
            )

    def take_over_if_stale(self, claim_id: int, heartbeat_at: float) -> bool:
        """Take an active claim over for reaping, only if its heartbeat is still
        ``heartbeat_at``: the compare-and-set that keeps two reapers from reaping the same trial.
        The claim stays active (its slot stays taken) with a fresh heartbeat until the reaper
        settles it, so a slow worker that completes the trial meanwhile never lets a second
        trial into its slot; a reaper that dies there leaves a claim that goes stale again."""
        with self.engine.begin() as conn:
            result = conn.execute(
                claims_table.update()
                .where(
                    claims_table.c.id == claim_id,
                    claims_table.c.state == ACTIVE,
                    claims_table.c.heartbeat_at == heartbeat_at,
                )
                .values(heartbeat_at=time.time())
            )
            return bool(result.rowcount)

    def finish_claim_forced(self, claim_id: int, *, completed: bool) -> None:
        """Set a claim's final state whatever it was (the reaper found its trial complete)."""
        with self.engine.begin() as conn:
            conn.execute(
                claims_table.update()
                .where(claims_table.c.id == claim_id)
                .values(state=DONE if completed else RELEASED)
            )

    def heartbeat(self, claim_ids: Iterable[int]) -> None:
        ids = list(claim_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                claims_table.update().where(claims_table.c.id.in_(ids)).values(heartbeat_at=time.time())
            )

    def stale_claims(self, study: str, grace_s: float) -> list[dict[str, Any]]:
        """Active claims whose worker has not heartbeated for ``grace_s`` seconds."""
        cutoff = time.time() - grace_s
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(claims_table).where(
                    claims_table.c.study == study,
                    claims_table.c.state == ACTIVE,
                    claims_table.c.heartbeat_at < cutoff,
                )
            ).mappings()
            return [dict(r) for r in rows]

    def active_claims(self, study: str) -> list[dict[str, Any]]:
        """Every active claim of ``study`` (worker, trial number, heartbeat)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(claims_table).where(claims_table.c.study == study, claims_table.c.state == ACTIVE)
            ).mappings()
            return [dict(r) for r in rows]

    def active_trial_numbers(self, study: str) -> set[int]:
        """Trial numbers held by active claims."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(claims_table.c.trial_number).where(
                    claims_table.c.study == study,
                    claims_table.c.state == ACTIVE,
                    claims_table.c.trial_number.is_not(None),
                )
            ).all()
        return {r[0] for r in rows}

    def claim_counts(self, study: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(claims_table.c.state, sa.func.count())
                .where(claims_table.c.study == study)
                .group_by(claims_table.c.state)
            ).all()
        counts = {ACTIVE: 0, DONE: 0, RELEASED: 0}
        counts.update({state: n for state, n in rows})
        return counts

    # -- measurements ---------------------------------------------------------------------------
    def record_measurement(
        self,
        study: str,
        trial_number: int,
        config_hash: str,
        config_json: str,
        metrics: dict[str, float],
        details: dict[str, Any],
    ) -> None:
        """Keep the raw measurement; a second write for the same trial is ignored."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    measurements_table.insert().values(
                        study=study,
                        trial_number=trial_number,
                        config_hash=config_hash,
                        config=config_json,
                        metrics=json.dumps(metrics, sort_keys=True),
                        details=json.dumps(details, sort_keys=True, default=str),
                        created_at=time.time(),
                    )
                )
        except sa.exc.IntegrityError:
            log.debug("measurement for trial %d of %s already stored", trial_number, study)

    def record_confirmation(
        self,
        study: str,
        run_id: str,
        process: int,
        trial_number: int,
        config_json: str,
        metrics: dict[str, float] | None,
        details: dict[str, Any],
        error: str | None = None,
    ) -> None:
        """Keep one fresh-process measurement of a confirmation run (or why it failed)."""
        with self.engine.begin() as conn:
            conn.execute(
                confirmations_table.insert().values(
                    study=study,
                    run_id=run_id,
                    process=process,
                    trial_number=trial_number,
                    config=config_json,
                    metrics=None if metrics is None else json.dumps(metrics, sort_keys=True),
                    details=json.dumps(details, sort_keys=True, default=str),
                    error=error,
                    created_at=time.time(),
                )
            )

    def _json_rows(self, table: sa.Table, study: str, order: sa.Column[Any]) -> list[dict[str, Any]]:
        """A study's rows of `table` in `order`, with `metrics` and `details` decoded."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table).where(table.c.study == study).order_by(order)).mappings()
            out = []
            for r in rows:
                d = dict(r)
                d["metrics"] = None if d["metrics"] is None else json.loads(d["metrics"])
                d["details"] = json.loads(d["details"])
                out.append(d)
            return out

    def confirmation_rows(self, study: str) -> list[dict[str, Any]]:
        """Every confirmation row of `study`, oldest first."""
        return self._json_rows(confirmations_table, study, confirmations_table.c.id)

    def measurements(self, study: str) -> list[dict[str, Any]]:
        return self._json_rows(measurements_table, study, measurements_table.c.trial_number)
