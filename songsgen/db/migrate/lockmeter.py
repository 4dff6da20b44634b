"""How long each migration keeps other writers waiting, measured the same way live and in rehearsal.

One meter for both, so the predicted and the measured figure are one quantity.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol, cast

from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db import pgconn

SAMPLE_SECONDS = 0.01
# SQLite: seconds between two of the metered connection's own checkpoints (after a transaction). Each one
# copies the WAL into the database and syncs it twice: after every chunk of an online rebuild it doubled
# the copy's writes and, timed with the chunk's commit, shrank every chunk to the smallest size.
CHECKPOINT_EVERY = 1.0
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
WRITE = (0, "write")  # SQLite's one lock
OWN_LOCKS = (
    "SELECT l.relation::bigint, c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
    f"WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND l.relation >= {USER_OID} "
    f"AND c.relkind IN {TABLE_KINDS}"
)
# The monitor cannot see tables the migrating transaction has created yet: those come
# back without a name.
SAMPLED_LOCKS = (
    "SELECT l.relation::bigint, c.relname, l.mode FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation "
    f"WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted AND l.relation >= {USER_OID} "
    f"AND (c.oid IS NULL OR c.relkind IN {TABLE_KINDS})"
)
TUPLES = "SELECT relid::bigint, n_tup_ins + n_tup_upd + n_tup_del FROM {} WHERE relname <> %s"

Key = tuple[int, str]  # (relation oid, mode); SQLite: WRITE


@dataclass
class _Step:
    start: float
    tables: dict[int, str]  # PostgreSQL: the tables that existed when its transaction began
    end: float | None = None
    rows: int = 0


def _keyword(sql: str) -> str:
    words = sql.lstrip(" (\n\t").split(None, 2)
    return words[0].upper() if words else ""


class LockMeter:
    """Lock spans and rows of one connection, per migration: an execute wrapper, commit/rollback."""

    def __init__(self, connection: BaseDatabaseWrapper, *, rows: bool = False) -> None:
        self.connection, self.pg, self.count_rows = connection, connection.vendor == "postgresql", rows
        # the PostgreSQL monitor thread writes `runs`, `spans` and `names` too
        self.guard = threading.Lock()
        self.spans: list[tuple[Key, float, float]] = []  # every hold that ended: (lock, from, to)
        # sampled locks seen in every sample since: [first, last] seen
        self.runs: dict[Key, list[float]] = {}
        self.names: dict[int, str] = {}
        self.held: dict[Key, float] = {}  # PostgreSQL: locks of the open transaction, since when
        # SQLite: when the open write transaction took the lock
        self.write_since: float | None = None
        self.steps: list[_Step] = []
        self.tables: dict[int, str] = {}
        self.rows = 0
        self.returning: list[Any] = []  # SQLite cursors of DML … RETURNING statements
        self.counts: dict[int, int] = {}

    # --- steps ------------------------------------------------------------------------------------
    def begin_step(self, fresh: bool) -> None:
        """A migration starts; `fresh`: in a transaction of its own, not an earlier one's."""
        if self.pg and (fresh or not self.steps):
            self.tables = dict(self._raw(f"SELECT oid::bigint, relname FROM pg_class WHERE oid >= {USER_OID} "
                                         f"AND relkind IN {TABLE_KINDS}"))
        self.rows, self.returning = 0, []
        if self.pg and self.count_rows:
            self.counts = self._pg_counts()
        self.steps.append(_Step(time.monotonic(), self.tables))

    def end_step(self) -> int:
        """The migration ended (done or failed): its rows, when counted."""
        step = self.steps[-1]
        step.end = time.monotonic()
        if not self.count_rows:
            return 0
        if self.pg:
            # a step that failed may leave nothing to read; rows stay unknown (0)
            with suppress(Exception):
                after = self._pg_counts()
                self.rows = sum(max(n - self.counts.get(oid, 0), 0) for oid, n in after.items())
        else:
            for cursor in self.returning:
                self._add(cursor)
        step.rows = self.rows
        return step.rows

    def measured(self) -> list[tuple[float, list[str]]]:
        """(lock_seconds, locks) of every step begun, in order; holds still open count up to now."""
        now = time.monotonic()
        with self.guard:
            spans = [*self.spans, *((key, first, last) for key, (first, last) in self.runs.items())]
            names = dict(self.names)
        spans += [(key, since, now) for key, since in self.held.items()]
        if self.write_since is not None:
            spans.append((WRITE, self.write_since, now))
        if self.pg:
            missing = sorted({oid for (oid, _mode), _s, _e in spans} - set(names) - set(self.tables))
            if missing:
                with suppress(Exception):
                    names.update(self._raw(f"SELECT oid::bigint, relname FROM pg_class WHERE oid = ANY(%s) "
                                           f"AND relkind IN {TABLE_KINDS}", [missing]))
        result = []
        for step in self.steps:
            end = step.end if step.end is not None else now
            over = [(key, e - s) for key, s, e in spans if s < end and e > step.start]
            result.append(self._pg_step(over, {**names, **step.tables}, step.tables) if self.pg else (
                max((seconds for key, seconds in over if key == WRITE), default=0.0),
                ["database write lock"] if any(key == WRITE for key, _ in over) else [],
            ))
        return result

    @staticmethod
    def _pg_step(over: list[tuple[Key, float]], names: dict[int, str],
                 existed: dict[int, str]) -> tuple[float, list[str]]:
        strongest: dict[int, str] = {}
        lock_seconds = 0.0
        for (oid, mode), seconds in over:
            if names.get(oid, RECORDER_TABLE) == RECORDER_TABLE:
                # the executor's bookkeeping; or not a table, or created and gone within the step
                continue
            if oid not in strongest or MODES.index(mode) > MODES.index(strongest[oid]):
                strongest[oid] = mode
            if mode in BLOCKS_WRITERS and oid in existed:
                lock_seconds = max(lock_seconds, seconds)
        locks = [
            f"{names[oid]}: {mode}" + ("" if oid in existed else " (new)")
            for oid, mode in sorted(strongest.items(), key=lambda item: (-MODES.index(item[1]), names[item[0]]))
        ]
        return lock_seconds, locks

    # --- what the connection does
    # ---------------------------------------------------------------------
    def _raw(self, query: str, params: list[Any] | None = None) -> list[tuple]:
        """A query on the watched connection that our own wrapper does not see."""
        with self.connection.connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()

    def _pg_counts(self) -> dict[int, int]:
        self._raw("SELECT pg_stat_force_next_flush()")
        # else a transaction reads the figures it first read
        self._raw("SELECT pg_stat_clear_snapshot()")
        counts: dict[int, int] = {}
        for view in ("pg_stat_user_tables", "pg_stat_xact_user_tables"):
            for oid, n in self._raw(TUPLES.format(view), [RECORDER_TABLE]):
                counts[oid] = counts.get(oid, 0) + n
        return counts

    def _add(self, cursor: Any) -> None:
        self.rows += max(cursor.rowcount, 0)

    def _span(self, key: Key, since: float, until: float) -> None:
        with self.guard:
            self.spans.append((key, since, until))

    def execute(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        """Time the statement; count its rows (SQLite); note the locks it took, even if it fails."""
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

        raw = self.connection.connection
        if done and raw.info.transaction_status == pq.TransactionStatus.INTRANS and keyword not in READS:
            for oid, name, mode in self._raw(OWN_LOCKS):  # held until the transaction ends
                with self.guard:
                    self.names[oid] = name
                self.held.setdefault((oid, mode), start)

    def _note_sqlite(self, sql: str, cursor: Any, start: float, done: bool) -> None:
        keyword, upper = _keyword(sql), sql.upper()
        if self.count_rows and done and keyword in DML and RECORDER_TABLE.upper() not in upper:
            # sqlite3 sets its rowcount once the rows are read: count it at the step's end
            if "RETURNING" in upper:
                self.returning.append(cursor.cursor)
            else:
                self._add(cursor)
        # Django's SQLite transaction_mode: BEGIN IMMEDIATE takes the write lock up front
        if keyword == "BEGIN":
            writes = "IMMEDIATE" in upper or "EXCLUSIVE" in upper
            # held once it returns; waiting for another writer is not holding
            start = time.monotonic()
        elif keyword == "WITH":
            writes = any(word in upper for word in DML)
        else:
            writes = keyword not in READS
        if self.connection.connection.in_transaction:
            if writes and self.write_since is None:
                self.write_since = start
        elif self.write_since is not None:  # a COMMIT sent as SQL
            self._span(WRITE, self.write_since, time.monotonic())
            self.write_since = None
        elif writes:
            self._span(WRITE, start, time.monotonic())

    def ended(self) -> None:
        """The transaction ended (commit or rollback): every lock it held is released now."""
        now = time.monotonic()
        if self.write_since is not None:
            self._span(WRITE, self.write_since, now)
            self.write_since = None
        for key, since in self.held.items():
            self._span(key, since, now)
        self.held = {}

    def sampled(self, rows: list[tuple[int, str | None, str]], now: float) -> None:
        """One pg_locks sample from the monitor thread: a lock counts from the first to the
        last sample that saw it (so a lock released just before the next migration began is
        not that migration's)."""
        seen = {(oid, mode) for oid, _name, mode in rows}
        with self.guard:
            for oid, name, mode in rows:
                if name:
                    self.names[oid] = name
                self.runs.setdefault((oid, mode), [now, now])[1] = now
            for key in [k for k in self.runs if k not in seen]:
                first, last = self.runs.pop(key)
                self.spans.append((key, first, last))


class _TransactionEnds(Protocol):
    """The private methods every COMMIT and ROLLBACK of a Django connection runs (unstubbed)."""

    _commit: Callable[[], None]
    _rollback: Callable[[], None]


@contextmanager
def metered(connection: BaseDatabaseWrapper, *, rows: bool = False) -> Iterator[LockMeter]:
    """Install a meter on the connection; on PostgreSQL run the pg_locks monitor beside it."""
    connection.ensure_connection()
    meter = LockMeter(connection, rows=rows)

    checkpoint = _Checkpoints(connection)

    def ending(original: Callable[[], None]) -> Callable[[], None]:
        def wrapped() -> None:
            try:
                original()
            finally:
                meter.ended()
                checkpoint()

        return wrapped

    ends = cast(_TransactionEnds, connection)
    ends._commit, ends._rollback = ending(ends._commit), ending(ends._rollback)
    connection.execute_wrappers.append(meter.execute)
    stop = threading.Event()
    monitor: threading.Thread | None = None
    if meter.pg:
        monitor = _monitor(connection, meter, stop)
    try:
        yield meter
    finally:
        stop.set()
        if monitor is not None:
            monitor.join()
        connection.execute_wrappers.remove(meter.execute)
        del ends._commit, ends._rollback
        checkpoint.restore()


class _Checkpoints:
    """SQLite: the metered connection's WAL checkpoint, after each transaction, outside its span.

    SQLite's autocheckpoint runs inside the COMMIT call, after the write lock is released, and
    writers do not wait for a PASSIVE checkpoint: timed with the COMMIT it added a hold no
    writer sees, and most of the noise (1M-song backfill batches: median 0.065 s with it, 0.042
    s without; the longest up to 1.27 s with it). So the connection's autocheckpoint is off
    while metered and the same connection checkpoints after a transaction, at most once a second
    (`CHECKPOINT_EVERY`)."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.raw = connection.connection if connection.vendor == "sqlite" else None
        self.pages = 0
        self.last = 0.0
        if self.raw is not None:
            self.pages = int(self.raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            self.raw.execute("PRAGMA wal_autocheckpoint = 0")

    def __call__(self) -> None:
        if self.raw is None or self.pages <= 0 or self.raw.in_transaction:
            return
        now = time.monotonic()
        if now - self.last < CHECKPOINT_EVERY:  # an online rebuild commits a chunk every ~70 ms
            return
        self.last = now
        # one that cannot run now is done by the next commit, any connection's
        with suppress(Exception):
            self.raw.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def restore(self) -> None:
        if self.raw is not None:
            # a connection closed meanwhile: its successor gets the pragmas anew
            with suppress(Exception):
                self.raw.execute(f"PRAGMA wal_autocheckpoint = {self.pages}")


def _monitor(connection: BaseDatabaseWrapper, meter: LockMeter, stop: threading.Event) -> threading.Thread | None:
    """Sample the connection's locks from a second connection until `stop`; None (no
    sampling, autocommit statements unseen) when that connection cannot be made: a
    measurement never stops a migrate."""
    import psycopg

    pid = meter._raw("SELECT pg_backend_pid()")[0][0]
    try:
        watcher = psycopg.connect(**pgconn.connect_params(connection.settings_dict), autocommit=True)
    except psycopg.Error:
        return None

    def sample() -> None:
        with watcher, suppress(psycopg.Error):
            while not stop.wait(SAMPLE_SECONDS):
                found = watcher.execute(SAMPLED_LOCKS, [pid]).fetchall()
                meter.sampled(found, time.monotonic())

    monitor = threading.Thread(target=sample, name="lockmeter-pg-locks", daemon=True)
    monitor.start()
    return monitor
