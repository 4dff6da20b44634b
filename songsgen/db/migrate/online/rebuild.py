"""One SQLite table rebuilt while the application writes: shadow, capture triggers, chunked copy, cut-over.

Every step that takes SQLite's write lock is one short transaction; between them the
application's writers get in. Outside a transaction (the safe migrate runs the migration on
its own) each chunk commits; inside one (Django's test runner, a grouped migration) the same
steps run in that transaction, and nothing is gained or lost."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from django.db import OperationalError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.migrate.online import names, pace
from songsgen.db.migrate.online.ddl import Spec


class RebuildStopped(Exception):
    """The shadow does not hold what the table holds: the rebuild stopped, the table is untouched."""


@dataclass
class Stats:
    """What one online rebuild did, for the migrate report."""

    table: str
    rows: int = 0  # copied by the chunks (rows the triggers wrote first are not counted twice)
    chunks: int = 0
    longest_lock_seconds: float = 0.0
    cutover_seconds: float = 0.0
    seconds: float = 0.0
    throttled_seconds: float = 0.0
    inline: bool = False  # ran inside the caller's transaction
    kept_triggers: int = 0
    dropped_triggers: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


class Rebuild:
    """The online rebuild of `spec.table`; `run` does it all, `abandon` undoes a stopped one."""

    def __init__(self, connection: BaseDatabaseWrapper, spec: Spec,
                 progress: Callable[[str], None] | None = None) -> None:
        self.connection, self.spec, self.progress = connection, spec, progress
        self.inline = connection.in_atomic_block
        self.stats = Stats(spec.table, inline=self.inline)
        self.qt, self.qs = names.quote(spec.table), names.quote(spec.shadow)
        self.pk = ""
        self.held = 0.0  # the last transaction's hold of the write lock, waiting for it not counted
        self.rowid_key = False  # the primary key is the rowid (INTEGER PRIMARY KEY): chunks are key ranges

    # --- the whole ---------------------------------------------------------------------------------
    def run(self) -> Stats | None:
        """Rebuild online; None (nothing changed) when the table or the connection does not suit it."""
        clock = time.monotonic()
        if _enforces_foreign_keys(self.connection) or not self.prepare():
            return None
        try:
            self.copy()
            self.cut_over()
        except BaseException:
            if not self.inline:
                try:
                    self.abandon()
                except Exception:  # noqa: BLE001 — e.g. the disk still full: the next migrate or dbcheck removes it
                    pass
            raise
        self.drop_old()
        self.stats.seconds = time.monotonic() - clock
        return self.stats

    @contextmanager
    def hold(self, *, cutover: bool = False) -> Iterator[Any]:
        """One short write transaction (inline: the caller's), timed as the write lock it holds."""
        if self.inline:
            with self.connection.cursor() as cursor:
                yield cursor
            return
        with transaction.atomic(using=self.connection.alias):  # BEGIN IMMEDIATE: the write lock from here
            start = time.monotonic()
            with self.connection.cursor() as cursor:
                yield cursor
        held = self.held = time.monotonic() - start
        self.stats.longest_lock_seconds = max(self.stats.longest_lock_seconds, held)
        if cutover:
            self.stats.cutover_seconds = held

    def _one(self, cursor: Any, sql: str, params: Any = None) -> Any:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        return None if row is None else row[0]

    # --- 1 and 2: shadow and capture ---------------------------------------------------------------
    def prepare(self) -> bool:
        """Create the shadow (its indexes on the empty table) and the capture triggers, in one
        transaction; False, with nothing left, when the table has no single shared primary key."""
        spec = self.spec
        with self.hold() as cursor:
            cursor.execute(*spec.create)
            pk = _primary_key(cursor, spec.shadow)
            if pk is None or pk not in spec.columns or _primary_key(cursor, spec.table) != pk \
                    or _without_rowid(cursor, spec.table):
                cursor.execute(f"DROP TABLE {self.qs}")
                return False
            self.pk = pk
            self.rowid_key = _integer_key(cursor, spec.table, pk)
            for sql in spec.indexes.values():
                cursor.execute(sql)
            for sql in self.triggers():
                cursor.execute(sql)
        return True

    def triggers(self) -> list[str]:
        """AFTER INSERT/UPDATE/DELETE on the table, writing the new row to the shadow by primary key:
        an upsert on the key alone, so a row colliding on a UNIQUE the new schema adds fails the write."""
        cols = ", ".join(names.quote(c) for c in self.spec.columns)
        qpk = names.quote(self.pk)
        sets = ", ".join(f"{names.quote(c)} = excluded.{names.quote(c)}" for c in self.spec.columns if c != self.pk)
        conflict = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
        upsert = (f"INSERT INTO {self.qs} ({cols}) {self.spec.select} WHERE {self.qt}.rowid = NEW.rowid "
                  f"ON CONFLICT({qpk}) {conflict};")
        t = self.spec.table
        return [
            f"CREATE TRIGGER {names.quote(names.trigger(t, 'insert'))} AFTER INSERT ON {self.qt} BEGIN {upsert} END",
            f"CREATE TRIGGER {names.quote(names.trigger(t, 'update'))} AFTER UPDATE ON {self.qt} BEGIN "
            f"DELETE FROM {self.qs} WHERE {qpk} = OLD.{qpk} AND OLD.{qpk} IS NOT NEW.{qpk}; {upsert} END",
            f"CREATE TRIGGER {names.quote(names.trigger(t, 'delete'))} AFTER DELETE ON {self.qt} BEGIN "
            f"DELETE FROM {self.qs} WHERE {qpk} = OLD.{qpk}; END",
        ]

    # --- 3 and 4: chunked copy, each chunk verified in its own transaction ------------------------------
    def copy(self) -> None:
        cols = ", ".join(names.quote(c) for c in self.spec.columns)
        qpk = names.quote(self.pk)
        with self.connection.cursor() as cursor:
            low = int(self._one(cursor, f"SELECT coalesce(min(rowid), 1) - 1 FROM {self.qt}"))
            start_top = int(self._one(cursor, f"SELECT coalesce(max(rowid), 0) FROM {self.qt}"))
        pacer = pace.Pacer(self.connection, inline=self.inline)
        report = pace.Progress(self.spec.table, low, start_top, self.progress)
        self._copy_chunks(pacer, report, low, start_top, cols, qpk)

    def _copy_chunks(self, pacer: pace.Pacer, report: pace.Progress, low: int, end: int, cols: str,
                     qpk: str) -> None:
        """Up to the rows there when the copy began (`end`), then one last chunk over the rows inserted
        since (the triggers wrote them; it verifies them): chasing every new row, it would never end."""
        tail = False
        while True:
            with self.hold() as cursor:
                top = self._one(cursor, f"SELECT max(rowid) FROM {self.qt}")
                if top is None or low >= top or (tail and low >= end):
                    break
                if not tail and low >= end:
                    tail, end = True, top
                high = top if self.inline else min(end, low + pacer.size)
                where = f"WHERE {self.qt}.rowid > {low} AND {self.qt}.rowid <= {high}"
                cursor.execute(f"INSERT INTO {self.qs} ({cols}) {self.spec.select} {where} "
                               f"ON CONFLICT({qpk}) DO NOTHING")
                self.stats.rows += max(cursor.rowcount, 0)
                self._verify_chunk(cursor, where, low, high)
            self.stats.chunks += 1
            low = high
            report.at(low, self.stats.rows)
            self.stats.throttled_seconds += pacer.after_chunk(self.held)

    def _verify_chunk(self, cursor: Any, where: str, low: int, high: int) -> None:
        """The chunk's rows, as the new schema makes them from the table now, equal the shadow's;
        their foreign keys hold (this connection does not enforce them)."""
        spec, qpk = self.spec, names.quote(self.pk)
        quoted = [names.quote(c) for c in spec.columns]
        cte = f"WITH m({', '.join(quoted)}) AS ({spec.select} {where}) "
        differs = " OR ".join([f"s.{qpk} IS NULL"] + [f"s.{q} IS NOT m.{q}" for q in quoted if q != qpk])
        cursor.execute(cte + f"SELECT min(CASE WHEN {differs} THEN m.{qpk} END), count(*) "
                       f"FROM m LEFT JOIN {self.qs} AS s ON s.{qpk} = m.{qpk}")
        bad, count = cursor.fetchone()
        if bad is not None:
            raise RebuildStopped(f"the copy of {spec.table} row {bad} differs from the row in {spec.table} "
                                 "(or the new schema refused it)")
        if self.rowid_key:  # the shadow holds no row of that range the table does not (a delete not captured)
            copied = self._one(cursor, f"SELECT count(*) FROM {self.qs} WHERE {qpk} > {low} AND {qpk} <= {high}")
            if copied != count:
                raise RebuildStopped(f"{spec.table} holds {count} rows with ids in ({low}, {high}] and its copy "
                                     f"{copied}")
        for parent, column, target in _foreign_keys(cursor, spec.shadow):
            if column not in spec.columns:
                continue
            parent = spec.table if parent in (spec.shadow, "new__" + spec.table) else parent
            qc = names.quote(column)
            qtarget = names.quote(target) if target else "rowid"
            orphan = self._one(cursor, cte + f"SELECT m.{qc} FROM m WHERE m.{qc} IS NOT NULL AND NOT EXISTS "
                               f"(SELECT 1 FROM {names.quote(parent)} AS p WHERE p.{qtarget} = m.{qc}) LIMIT 1")
            if orphan is not None:
                raise RebuildStopped(f"{spec.table}.{column} = {orphan!r} has no row in {parent} "
                                     "(a foreign key the new schema enforces)")

    # --- 5: cut-over ----------------------------------------------------------------------------------
    def cut_over(self) -> None:
        """Swap the shadow in, in one transaction: other tables' references to the table name are
        not rewritten, so they point at the shadow once it has the name."""
        from songsgen.db.migrate.online import swap

        with self.hold(cutover=True) as cursor:
            kept, dropped = swap.swap(cursor, self.spec)
        self.stats.kept_triggers, self.stats.dropped_triggers = kept, dropped

    def drop_old(self) -> None:
        """Empty the old table in short transactions, then drop it (a DROP of every row at once would
        hold the lock as long as the copy). The change is made: a failure here only leaves the old table
        for the next migrate or dbcheck."""
        try:
            drop_in_chunks(self.connection, names.old(self.spec.table), inline=self.inline)
        except Exception as exc:  # noqa: BLE001 — e.g. a full disk
            if self.inline:
                raise
            if self.progress is not None:
                self.progress(f"  the old copy of {self.spec.table} stays ({exc}); the next migrate or dbcheck "
                              "removes it")

    # --- 6: a rebuild that stopped --------------------------------------------------------------------
    def abandon(self) -> None:
        """Remove the triggers first (the application's writes go through them), then the shadow."""
        remove_capture(self.connection, self.spec.table)


def remove_capture(connection: BaseDatabaseWrapper, table: str) -> None:
    """Drop a rebuild's capture triggers in one transaction, then its shadow table in chunks."""
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        for kind in names.KINDS:
            cursor.execute(f"DROP TRIGGER IF EXISTS {names.quote(names.trigger(table, kind))}")
    drop_in_chunks(connection, names.shadow(table), inline=False)


def drop_in_chunks(connection: BaseDatabaseWrapper, table: str, *, inline: bool) -> None:
    """Delete `table`'s rows in short transactions, then drop it."""
    qt = names.quote(table)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [table])
        if cursor.fetchone() is None:
            return
    if not inline:
        try:
            _delete_in_chunks(connection, qt)
        except OperationalError:  # e.g. a full disk: a DROP at once writes far less than the deletes,
            with connection.cursor() as cursor, contextlib.suppress(OperationalError):  # into an emptied WAL
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {qt}")


def _delete_in_chunks(connection: BaseDatabaseWrapper, qt: str) -> None:
    """Delete `qt`'s rows in short transactions, each sized to hold the write lock briefly."""
    pacer = pace.Pacer(connection, inline=False)
    while True:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            start = time.monotonic()  # the lock is ours from BEGIN IMMEDIATE: waiting for it is not holding it
            cursor.execute(f"DELETE FROM {qt} WHERE rowid IN (SELECT rowid FROM {qt} LIMIT {pacer.size})")
            deleted = cursor.rowcount
        if deleted <= 0:
            break
        pacer.after_chunk(time.monotonic() - start)


def _enforces_foreign_keys(connection: BaseDatabaseWrapper) -> bool:
    """A schema editor used outside its `with` (foreign keys back on): the cut-over's renames would rewrite
    other tables' references, and it refuses; known before the copy, Django's way is taken instead."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA foreign_keys")
        return bool(cursor.fetchone()[0])


def _primary_key(cursor: Any, table: str) -> str | None:
    cursor.execute(f"PRAGMA table_info({names.quote(table)})")
    keys = [row[1] for row in cursor.fetchall() if row[5]]
    return keys[0] if len(keys) == 1 else None


def _integer_key(cursor: Any, table: str, pk: str) -> bool:
    cursor.execute(f"PRAGMA table_info({names.quote(table)})")
    return any(row[1] == pk and row[5] and str(row[2]).upper() == "INTEGER" for row in cursor.fetchall())


def _without_rowid(cursor: Any, table: str) -> bool:
    cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = %s", [table])
    row = cursor.fetchone()
    return bool(row and re.search(r"WITHOUT\s+ROWID\s*\Z", row[0] or "", re.I))


def _foreign_keys(cursor: Any, table: str) -> list[tuple[str, str, str | None]]:
    """(parent table, column, parent column or None for its primary key) of each one-column foreign key."""
    cursor.execute(f"PRAGMA foreign_key_list({names.quote(table)})")
    rows = cursor.fetchall()
    counts: dict[int, int] = {}
    for row in rows:
        counts[row[0]] = counts.get(row[0], 0) + 1
    return [(row[2], row[3], row[4]) for row in rows if counts[row[0]] == 1]
