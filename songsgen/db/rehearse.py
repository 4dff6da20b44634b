"""`migrate --rehearse`: apply the plan to a scratch copy of the pre-migrate snapshot and measure each migration.

`rehearse(connection, snapshot, plan_keys)` restores the snapshot into a scratch database (SQLite: a 0600 copy
beside the snapshot; PostgreSQL: a new database filled by pg_restore), applies the plan there with Django's
executor, verifies the result with the safe migrate's `verify`, and always removes the scratch copy, on error
and Ctrl-C too. The live database is only read for its settings: it is never connected to.

Per migration it reports:
- `seconds`: wall time from the executor's start callback to its success callback.
- `rows`: rows the migration inserted, updated or deleted, django_migrations left out. SQLite: the sum of
  the DML statements' own row counts (sqlite3_changes), seen through an execute wrapper; `total_changes`
  is useless here because it counts FTS5's shadow-table writes (an UPDATE of 4 songs counts 32).
  PostgreSQL: the delta of n_tup_ins + n_tup_upd + n_tup_del in pg_stat_user_tables, read on the migrating
  connection right after `pg_stat_force_next_flush()` (the backend flushes before it answers the next
  query), so it counts writes however they were made, triggers included.
- `lock_seconds` and `locks`. SQLite: the longest write transaction, from the statement that takes the
  write lock (a write, or BEGIN IMMEDIATE) to the end of its COMMIT/ROLLBACK, or one autocommit write
  statement; seen by the execute wrapper and the connection's `_commit`/`_rollback`. PostgreSQL: per
  table, the strongest mode held and how long a writer-blocking lock (SHARE and stronger) was held
  without a break. Inside a transaction the backend's own pg_locks rows are read after each statement
  (a lock counts from the start of the statement that took it to the end of the commit); a monitor thread
  samples pg_locks every 10 ms for what autocommit statements take. Tables the migration itself
  creates are listed "(new)" and do not count: nobody else can wait for them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor

from songsgen.db import backup, pgdump

SCRATCH_PREFIX = "songsgen_rehearse_"
SAMPLE_SECONDS = 0.01
MODES = [  # weakest first
    "AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
    "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock",
]
BLOCKS_WRITERS = set(MODES[MODES.index("ShareLock"):])  # the modes that conflict with ROW EXCLUSIVE
DML = {"INSERT", "UPDATE", "DELETE", "REPLACE"}
READS = {"SELECT", "SAVEPOINT", "RELEASE", "ROLLBACK", "PRAGMA", "EXPLAIN", "VALUES", "COMMIT", "END", "BEGIN"}
RECORDER_TABLE = "django_migrations"
USER_OID = 16384  # FirstNormalObjectId: below it are the system catalogs
TABLE_KINDS = "('r', 'p', 'm')"
OWN_LOCKS = (
    "SELECT l.relation::bigint, c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
    f"WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND l.relation >= {USER_OID} "
    f"AND c.relkind IN {TABLE_KINDS}"
)
# The monitor cannot see tables the migrating transaction has created yet: those come back without a name.
SAMPLED_LOCKS = (
    "SELECT l.relation::bigint, c.relname, l.mode FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation "
    f"WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted AND l.relation >= {USER_OID} "
    f"AND (c.oid IS NULL OR c.relkind IN {TABLE_KINDS})"
)


class RehearsalError(Exception):
    """The scratch database could not be made (no CREATEDB right, a failed restore, a missing tool)."""


@dataclass
class RehearsedStep:
    """One migration as it ran on the scratch copy."""

    migration: str  # "app.0002_name"
    seconds: float
    lock_seconds: float
    locks: list[str] = field(default_factory=list)  # "songs_song: AccessExclusiveLock"; SQLite: "database write lock"
    rows: int = 0
    error: str | None = None


@dataclass
class Rehearsal:
    """The whole rehearsal: each step, the time it all took, and what verification found."""

    steps: list[RehearsedStep]
    seconds: float
    verification: list[dict[str, str]]
    ok: bool


# --- the scratch database ---------------------------------------------------------------------------
@contextmanager
def _scratch_sqlite(snapshot: Path) -> Iterator[str]:
    """A private copy of the snapshot beside it, removed with its WAL files afterwards."""
    fd, name = tempfile.mkstemp(prefix=".rehearse-", suffix=".sqlite3", dir=snapshot.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out, open(snapshot, "rb") as source:
            shutil.copyfileobj(source, out, pgdump.CHUNK)
        yield name
    finally:
        backup.remove_file(Path(name))


def _maintenance_connection(settings_dict: dict[str, Any]) -> Any:
    """An autocommit connection to a database other than the live one, for CREATE/DROP DATABASE."""
    import psycopg

    failure: Exception | None = None
    for dbname in ("postgres", "template1"):
        try:
            return psycopg.connect(**pgdump.connect_params(settings_dict, dbname), autocommit=True)
        except psycopg.OperationalError as exc:
            failure = exc
    raise RehearsalError(f"cannot connect to the server's maintenance database: {failure}")


@contextmanager
def _scratch_postgres(settings_dict: dict[str, Any], snapshot: Path) -> Iterator[str]:
    """A new database with the live one's encoding and locale, filled from the archive; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"{SCRATCH_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    admin = _maintenance_connection(settings_dict)
    try:
        row = admin.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
            [settings_dict["NAME"]],
        ).fetchone()
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if row:
            create += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(*map(sql.Literal, row))
        try:
            admin.execute(create)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise RehearsalError(
                f"the role {settings_dict.get('USER') or '(default)'} may not create databases, and a rehearsal "
                "needs a scratch database: grant it with ALTER ROLE … CREATEDB, or migrate without --rehearse."
            ) from exc
        try:
            try:
                pgdump.restore({**settings_dict, "NAME": name}, snapshot)
            except pgdump.PgDumpError as exc:
                raise RehearsalError(f"restoring the snapshot into the scratch database failed: {exc}") from exc
            yield name
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


@contextmanager
def _alias(settings_dict: dict[str, Any], name: str) -> Iterator[BaseDatabaseWrapper]:
    """A Django connection to the scratch database under a temporary alias, closed and forgotten afterwards."""
    alias = f"rehearse_{os.getpid()}_{secrets.token_hex(4)}"
    connections.settings[alias] = {**settings_dict, "NAME": name}
    try:
        scratch = connections[alias]
        try:
            yield scratch
        finally:
            scratch.close()
            del connections[alias]
    finally:
        del connections.settings[alias]


# --- measuring ----------------------------------------------------------------------------------------
def _keyword(sql: str) -> str:
    words = sql.lstrip(" (\n\t").split(None, 2)
    return words[0].upper() if words else ""


class _Meter:
    """Rows and locks of the current step, fed by an execute wrapper and the connection's commit/rollback."""

    def __init__(self, scratch: BaseDatabaseWrapper) -> None:
        self.scratch, self.pg = scratch, scratch.vendor == "postgresql"
        self.guard = threading.Lock()  # the PostgreSQL monitor thread writes `runs` and `spans` too
        self.begin_step()

    def begin_step(self) -> None:
        self.rows = 0
        self.returning: list[Any] = []  # SQLite cursors of DML … RETURNING statements
        self.write_since: float | None = None  # SQLite: when the open write transaction took the lock
        self.held: dict[tuple[int, str], float] = {}  # PostgreSQL: locks of the open transaction, since when
        with self.guard:
            self.runs: dict[tuple[int, str], float] = {}  # sampled locks seen in every sample since then
            self.spans: dict[tuple[int, str], float] = {}  # longest continuous hold per (relation, mode)
            self.names: dict[int, str] = {}
        self.tables: dict[int, str] = {}
        self.counts: dict[int, int] = {}
        if self.pg:
            self.tables = dict(self._raw(f"SELECT oid::bigint, relname FROM pg_class WHERE oid >= {USER_OID} "
                                         f"AND relkind IN {TABLE_KINDS}"))
            self.counts = self._pg_counts()

    def _raw(self, query: str, params: list[Any] | None = None) -> list[tuple]:
        """A query on the scratch connection that our own wrapper does not see."""
        with self.scratch.connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()

    def _pg_counts(self) -> dict[int, int]:
        self._raw("SELECT pg_stat_force_next_flush()")
        return dict(self._raw("SELECT relid::bigint, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
                              "WHERE relname <> %s", [RECORDER_TABLE]))

    def _add(self, cursor: Any) -> None:
        self.rows += max(cursor.rowcount, 0)

    def _span(self, key: tuple[int, str], seconds: float) -> None:
        with self.guard:
            self.spans[key] = max(self.spans.get(key, 0.0), seconds)

    def execute(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        """Time the statement; count its rows (SQLite); note the locks it took, also when it fails."""
        start, done = time.monotonic(), False
        try:
            result = execute(sql, params, many, context)
            done = True
            return result
        finally:
            if self.pg:
                self._note_pg(_keyword(sql), start, done)
            else:
                self._note_sqlite(sql, context["cursor"], start, done)

    def _note_pg(self, keyword: str, start: float, done: bool) -> None:
        from psycopg import pq

        raw = self.scratch.connection
        if done and raw.info.transaction_status == pq.TransactionStatus.INTRANS and keyword not in READS:
            for oid, name, mode in self._raw(OWN_LOCKS):  # held until the transaction ends
                with self.guard:
                    self.names[oid] = name
                self.held.setdefault((oid, mode), start)

    def _note_sqlite(self, sql: str, cursor: Any, start: float, done: bool) -> None:
        keyword, upper = _keyword(sql), sql.upper()
        if done and keyword in DML and RECORDER_TABLE.upper() not in upper:
            if "RETURNING" in upper:  # sqlite3 sets its rowcount once the rows are read: count it at the step's end
                self.returning.append(cursor.cursor)
            else:
                self._add(cursor)
        if keyword == "BEGIN":  # Django's SQLite transaction_mode: BEGIN IMMEDIATE takes the write lock up front
            writes = "IMMEDIATE" in upper or "EXCLUSIVE" in upper
        elif keyword == "WITH":
            writes = any(word in upper for word in DML)
        else:
            writes = keyword not in READS
        if self.scratch.connection.in_transaction:
            if writes and self.write_since is None:
                self.write_since = start
        elif self.write_since is not None:  # a COMMIT sent as SQL
            self._span((0, "write"), time.monotonic() - self.write_since)
            self.write_since = None
        elif writes:
            self._span((0, "write"), time.monotonic() - start)

    def ended(self) -> None:
        """The transaction ended (commit or rollback): every lock it held is released now."""
        now = time.monotonic()
        if self.write_since is not None:
            self._span((0, "write"), now - self.write_since)
            self.write_since = None
        for key, since in self.held.items():
            self._span(key, now - since)
        self.held = {}

    def sampled(self, rows: list[tuple[int, str | None, str]], now: float) -> None:
        """One pg_locks sample from the monitor thread."""
        seen = {(oid, mode) for oid, _name, mode in rows}
        with self.guard:
            for oid, name, mode in rows:
                if name:
                    self.names[oid] = name
                self.runs.setdefault((oid, mode), now)
            for key in [k for k in self.runs if k not in seen]:
                self.spans[key] = max(self.spans.get(key, 0.0), now - self.runs.pop(key))

    def end_step(self) -> tuple[float, list[str], int]:
        """(lock_seconds, locks, rows) of the step that just finished."""
        self.ended()
        now = time.monotonic()
        with self.guard:
            for key, since in self.runs.items():
                self.spans[key] = max(self.spans.get(key, 0.0), now - since)
            spans, names = dict(self.spans), {**self.names, **self.tables}
        if not self.pg:
            for cursor in self.returning:
                self._add(cursor)
            seconds = spans.get((0, "write"), 0.0)
            return seconds, (["database write lock"] if (0, "write") in spans else []), self.rows
        with suppress(Exception):  # a step that failed may leave nothing to read; rows stay unknown (0)
            after = self._pg_counts()
            self.rows = sum(max(n - self.counts.get(oid, 0), 0) for oid, n in after.items())
        missing = [oid for oid, _mode in spans if oid not in names]
        if missing:
            with suppress(Exception):
                names.update(self._raw(f"SELECT oid::bigint, relname FROM pg_class WHERE oid = ANY(%s) "
                                       f"AND relkind IN {TABLE_KINDS}", [missing]))
        strongest: dict[int, str] = {}
        lock_seconds = 0.0
        for (oid, mode), seconds in spans.items():
            if names.get(oid, RECORDER_TABLE) == RECORDER_TABLE:
                continue  # the executor's bookkeeping; or not a table, or created and gone within the step
            if MODES.index(mode) > MODES.index(strongest.get(oid, MODES[0])) or oid not in strongest:
                strongest[oid] = mode
            if mode in BLOCKS_WRITERS and oid in self.tables:
                lock_seconds = max(lock_seconds, seconds)
        locks = [
            f"{names[oid]}: {mode}" + ("" if oid in self.tables else " (new)")
            for oid, mode in sorted(strongest.items(), key=lambda item: (-MODES.index(item[1]), names[item[0]]))
        ]
        return lock_seconds, locks, self.rows


@contextmanager
def _metered(scratch: BaseDatabaseWrapper) -> Iterator[_Meter]:
    """Install the meter on the scratch connection; on PostgreSQL run the pg_locks monitor beside it."""
    scratch.ensure_connection()
    meter = _Meter(scratch)

    def ending(original: Callable[[], None]) -> Callable[[], None]:
        def wrapped() -> None:
            try:
                original()
            finally:
                meter.ended()

        return wrapped

    scratch._commit, scratch._rollback = ending(scratch._commit), ending(scratch._rollback)  # type: ignore[method-assign]
    scratch.execute_wrappers.append(meter.execute)
    stop = threading.Event()
    monitor: threading.Thread | None = None
    if meter.pg:
        import psycopg

        pid = meter._raw("SELECT pg_backend_pid()")[0][0]
        watcher = psycopg.connect(**pgdump.connect_params(scratch.settings_dict), autocommit=True)

        def sample() -> None:
            with suppress(psycopg.Error):
                while not stop.wait(SAMPLE_SECONDS):
                    rows = watcher.execute(SAMPLED_LOCKS, [pid]).fetchall()
                    meter.sampled(rows, time.monotonic())

        monitor = threading.Thread(target=sample, name="rehearse-pg-locks", daemon=True)
        monitor.start()
    try:
        yield meter
    finally:
        stop.set()
        if monitor is not None:
            monitor.join()
            watcher.close()
        scratch.execute_wrappers.remove(meter.execute)
        del scratch._commit, scratch._rollback


# --- the rehearsal ----------------------------------------------------------------------------------
def rehearse(
    connection: BaseDatabaseWrapper,
    snapshot: Path,
    plan_keys: list[tuple[str, str, bool]],
    *,
    log: Callable[[str], None] = lambda s: None,
) -> Rehearsal:
    """Apply the plan to a scratch copy of `snapshot` and report each migration; the live database is untouched."""
    from songsgen.db.migrate import verify  # migrate imports this module

    clock = time.monotonic()
    if connection.vendor == "sqlite":
        scratch_db = _scratch_sqlite(snapshot)
    elif connection.vendor == "postgresql":
        scratch_db = _scratch_postgres(connection.settings_dict, snapshot)
    else:
        raise RehearsalError(f"no rehearsal for a {connection.vendor} database")
    steps: list[RehearsedStep] = []
    verification: list[dict[str, str]] = []
    with scratch_db as name, _alias(connection.settings_dict, name) as scratch, _metered(scratch) as meter:
        log(f"Rehearsing {len(plan_keys)} migration(s) on a scratch copy of {snapshot.name} ({name}) ...")
        current: list[Any] = []  # [name, start] of the migration running now

        def finish(error: str | None = None) -> None:
            seconds = time.monotonic() - current[1]
            lock_seconds, locks, rows = meter.end_step()
            steps.append(RehearsedStep(current[0], seconds, lock_seconds, locks, rows, error))
            log(f"  {current[0]}: {seconds:.3f} s, lock {lock_seconds:.3f} s, {rows} row(s) {error or ''}")
            current.clear()

        def progress(action: str, migration: Any = None, fake: bool = False) -> None:
            if action in ("apply_start", "unapply_start"):
                meter.begin_step()
                current[:] = [f"{migration.app_label}.{migration.name}", time.monotonic()]
            elif action in ("apply_success", "unapply_success"):
                finish()

        executor = MigrationExecutor(scratch, progress)
        plan = [(executor.loader.graph.nodes[(app, migration)], backwards) for app, migration, backwards in plan_keys]
        try:
            executor.migrate([(app, migration) for app, migration, _ in plan_keys], plan=plan)
        except Exception as exc:  # the migration failed on the copy: report it; Ctrl-C propagates
            error = f"{type(exc).__name__}: {exc}"
            if current:
                finish(error)
            else:
                steps.append(RehearsedStep("(plan)", 0.0, 0.0, error=error))
        else:
            try:
                verification = [p.as_dict() for p in verify(scratch, plan)[0]]
            except Exception as exc:  # noqa: BLE001 — a check that cannot run is a failed check
                verification = [{"severity": "error", "check": "verify", "subject": name, "detail": str(exc)}]
    ok = all(step.error is None for step in steps) and not any(p["severity"] == "error" for p in verification)
    return Rehearsal(steps=steps, seconds=time.monotonic() - clock, verification=verification, ok=ok)


def format_report(rehearsal: Rehearsal) -> list[str]:
    """The rehearsal as a table a person reads before deciding to migrate the live database."""
    rows = [("migration", "time", "lock held", "rows", "locks")]
    for step in rehearsal.steps:
        locks = ", ".join(step.locks) or "-"
        rows.append((step.migration, f"{step.seconds:.3f} s", f"{step.lock_seconds:.3f} s", str(step.rows), locks))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
             for row in rows]
    lines += [f"FAILED {step.migration}: {step.error}" for step in rehearsal.steps if step.error]
    lines += [f"[{p['severity']}] {p['check']}: {p['subject']}: {p['detail']}" for p in rehearsal.verification]
    verdict = "ok" if rehearsal.ok else "FAILED"
    lines.append(f"Rehearsal {verdict} in {rehearsal.seconds:.2f} s on a scratch copy; the live database is untouched.")
    return lines
