"""transferdb's table copy: keyset batches read, written below the ORM, digested on the way."""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.fields import storage_field
from songsgen.db.move import rowhash
from songsgen.db.move.compare import RowHasher, TableDigest, has_integer_pk, keyset, read_batches
from songsgen.db.move.tables import Table

Preparer = Callable[[Any], Any] | None
WRITERS = 2  # PostgreSQL connections writing one table's batches at once

# Field classes whose Python values the target's driver stores correctly as they come from the
# source (after the source's converters): no per-value get_db_prep_save() on the hot path. Exact
# classes only; a subclass may override its conversion and goes the slow, always-correct way.
_PASS_THROUGH = {
    models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField, models.BigIntegerField,
    models.SmallIntegerField, models.PositiveIntegerField, models.PositiveBigIntegerField,
    models.PositiveSmallIntegerField, models.CharField, models.TextField, models.EmailField, models.SlugField,
    models.URLField, models.FloatField, models.BooleanField,
}
# psycopg adapts these Python types itself; SQLite needs Django's adaptation (text formats).
_PASS_THROUGH_POSTGRESQL = _PASS_THROUGH | {
    models.DateTimeField, models.DateField, models.TimeField, models.DurationField, models.UUIDField,
    models.BinaryField, models.DecimalField,
}
# SQLite's stored values that PostgreSQL's COPY reads as they are (text of a datetime, a date, a
# time, a UUID's 32 hex digits, a JSON document; 1/0 for a boolean); a duration (microseconds) or a
# decimal is converted first.
_STORED_AS_IS_POSTGRESQL = {"text", "int", "bool", "datetime", "date", "time", "float", "uuid", "bytes", "json"}


def value_preparers(table: Table, target: BaseDatabaseWrapper) -> list[Preparer]:
    """Per ORM-converted column: None to pass a value through, or the target's get_db_prep_save."""
    allowed = _PASS_THROUGH_POSTGRESQL if target.vendor == "postgresql" else _PASS_THROUGH
    preparers: list[Preparer] = []
    for f in table.fields:
        kind = storage_field(f)
        if type(kind) in allowed and (not f.is_relation or type(f) in (models.ForeignKey, models.OneToOneField)):
            preparers.append(None)
        else:
            preparers.append(partial(f.get_db_prep_save, connection=target))
    return preparers


def _from_stored(field: models.Field, source: BaseDatabaseWrapper, target: BaseDatabaseWrapper) -> Preparer:
    """A stored SQLite value to the target's: the ORM's converters (backend's, then field's),
    then the target's adaptation, as a values_list() and a save would do."""
    column = field.get_col(field.model._meta.db_table)
    converters = [*source.ops.get_db_converters(column), *column.get_db_converters(source)]

    def prepare(value: Any) -> Any:
        for convert in converters:
            value = convert(value, column, source)
        return field.get_db_prep_save(value, connection=target)

    return prepare


def stored_preparers(table: Table, source: BaseDatabaseWrapper, target: BaseDatabaseWrapper) -> list[Preparer]:
    """Per column of stored SQLite values: None to write the value as stored, or its conversion."""
    if target.vendor == "sqlite":
        return [None] * len(table.fields)  # the same storage forms on both sides
    return [None if rowhash.kind(f) in _STORED_AS_IS_POSTGRESQL else _from_stored(f, source, target)
            for f in table.fields]


def prepare(rows: list[tuple[Any, ...]], preparers: Sequence[Preparer]) -> Sequence[Sequence[Any]]:
    """The rows with each column's preparer applied (the rows themselves when there is none)."""
    if all(p is None for p in preparers):
        return rows
    return [tuple(v if p is None else p(v) for v, p in zip(row, preparers, strict=True)) for row in rows]


def _copy_sql(target: BaseDatabaseWrapper, table: Table) -> str:
    qn = target.ops.quote_name
    return f"COPY {qn(table.name)} ({', '.join(qn(f.column) for f in table.fields)}) FROM STDIN"


def _copy_rows(cursor: Any, sql: str, rows: Sequence[Sequence[Any]], *, queued: bool) -> None:
    from psycopg.copy import QueuedLibpqWriter  # only PostgreSQL deployments need psycopg

    # Queued: a writer thread sends while this one formats rows, so the server ingests meanwhile
    # (not needed on OrderedWriters' threads, which already run beside the reading, and whose
    # queues would cost memory).
    with cursor.copy(sql, **({"writer": QueuedLibpqWriter(cursor)} if queued else {})) as copy:
        for row in rows:
            copy.write_row(row)


def insert(target: BaseDatabaseWrapper, table: Table, rows: Sequence[Sequence[Any]]) -> None:
    """Write prepared rows below the ORM: COPY on PostgreSQL, executemany on SQLite."""
    if target.vendor == "postgresql":
        with target.connection.cursor() as cursor:
            _copy_rows(cursor, _copy_sql(target, table), rows, queued=True)
        return
    qn = target.ops.quote_name
    columns = ", ".join(qn(f.column) for f in table.fields)
    marks = ", ".join("?" * len(table.fields))
    cursor = target.connection.cursor()
    try:
        cursor.executemany(f"INSERT INTO {qn(table.name)} ({columns}) VALUES ({marks})", rows)
    finally:
        cursor.close()


class OrderedWriters:
    """COPY of consecutive batches on WRITERS PostgreSQL connections of their own at once,
    each batch in its own transaction, committed in batch order: the server stores two batches
    at a time, and what is committed is still always every batch up to some point (what
    `--resume` relies on)."""

    def __init__(self, source: BaseDatabaseWrapper, target: BaseDatabaseWrapper, table: Table) -> None:
        self.sql = _copy_sql(target, table)
        self.pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="transferdb-copy")
        self.connections: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.opened: list[Any] = []
        zone = _copy_zone(source)
        for _ in range(WRITERS):
            # Django's settings, our own
            raw = target.get_new_connection(target.get_connection_params())
            raw.autocommit = True
            if zone is not None:
                raw.execute("SELECT set_config('TimeZone', %s, false)", [zone])
            self.opened.append(raw)
            self.connections.put(raw)
        self.previous: Future[None] | None = None
        self.in_flight: deque[Future[None]] = deque()

    def submit(self, rows: Sequence[Sequence[Any]], then: Callable[[Any], None]) -> None:
        """Write `rows`; `then(connection)` runs in the same transaction, after the last commit."""
        while len(self.in_flight) >= WRITERS:  # at most WRITERS batches in memory
            self.in_flight.popleft().result()
        previous = self.previous

        def write() -> None:
            raw = self.connections.get()
            try:
                with raw.transaction():
                    with raw.cursor() as cursor:
                        _copy_rows(cursor, self.sql, rows, queued=False)
                    if previous is not None:
                        # the batch before is committed (or this one rolls back with it)
                        previous.result()
                    then(raw)
            finally:
                self.connections.put(raw)

        self.previous = self.pool.submit(write)
        self.in_flight.append(self.previous)

    def finish(self) -> None:
        """Until every batch is committed; the first failure is raised here."""
        while self.in_flight:
            self.in_flight.popleft().result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for raw in self.opened:
            raw.close()


def _copy_zone(source: BaseDatabaseWrapper) -> str | None:
    """The time zone COPY must read stored SQLite datetimes in (naive, source zone), if any."""
    return source.timezone_name if source.vendor == "sqlite" and settings.USE_TZ else None


@contextmanager
def bulk_session(source: BaseDatabaseWrapper, target: BaseDatabaseWrapper) -> Iterator[None]:
    """Per-connection settings for a bulk load, restored afterwards."""
    if target.vendor == "postgresql":
        # Stored SQLite datetimes are naive text in the source's time zone: COPY reads
        # them in the session's.
        with target.cursor() as cursor:
            cursor.execute("SELECT current_setting('TimeZone')")
            (previous,) = cursor.fetchone()
            cursor.execute("SELECT set_config('TimeZone', %s, false)", [_copy_zone(source) or previous])
        try:
            yield
        finally:
            with target.cursor() as cursor:
                cursor.execute("SELECT set_config('TimeZone', %s, false)", [previous])
        return
    if target.vendor != "sqlite":
        yield
        return
    # A transfer that is interrupted is resumed, so no fsync per batch; the
    # usual setting comes back.
    with target.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        (previous,) = cursor.fetchone()
        cursor.execute("PRAGMA synchronous = OFF")
    try:
        yield
    finally:
        with target.cursor() as cursor:
            cursor.execute(f"PRAGMA synchronous = {int(previous)}")


def stored_batches(
    connection: BaseDatabaseWrapper, table: Table, *, batch_size: int, after: Any = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """SQLite rows as stored, in primary-key order, `batch_size` at a time (keyset pagination, like
    compare.read_batches), each batch one bounded query."""
    qn = connection.ops.quote_name
    pk = qn(table.pk.column)
    base = f"SELECT {rowhash.stored_columns(connection, table)} FROM {qn(table.name)}"

    def fetch(last: Any) -> list[tuple[Any, ...]]:
        with connection.cursor() as cursor:
            if last is None:
                cursor.execute(f"{base} ORDER BY {pk} LIMIT %s", [batch_size])
            else:
                cursor.execute(f"{base} WHERE {pk} > %s ORDER BY {pk} LIMIT %s", [last, batch_size])
            return cursor.fetchall()

    return keyset(fetch, batch_size, None if after is None else table.pk.get_db_prep_value(after, connection))


def _then(then: Callable[[Any, list[tuple[Any, ...]], int], None], batch: list[tuple[Any, ...]], written: int,
          connection: Any) -> None:
    then(connection, batch, written)


def copy_batches(
    source: BaseDatabaseWrapper, target: BaseDatabaseWrapper, table: Table, *, batch_size: int, after: Any = None,
    own_transactions: bool = True, want_digest: bool = False,
    then: Callable[[Any, list[tuple[Any, ...]], int], None] = lambda connection, batch, written: None,
) -> tuple[int, TableDigest | None]:
    """The table copy: `table` read from `source` after `after` in key order and written to
    `target` batch by batch, each in a transaction of its own (on PostgreSQL two at once,
    committed in order: OrderedWriters) with `then(connection, batch, rows written up to it)`
    inside it — unless the caller holds a transaction, then all in it. Returns the rows written
    and, if wanted and computed on the way, the digest of the rows read (compare.py's method for
    this table; none for a PostgreSQL source of a rowhash table, which one query hashes at the
    end). `then` sees the batch as read; its first column is the primary key."""
    table_method = rowhash.method(table, source, target)
    if table_method == rowhash.METHOD and source.vendor == "sqlite":
        batches = stored_batches(source, table, batch_size=batch_size, after=after)
        preparers = stored_preparers(table, source, target)
        hasher: Callable[[Sequence[Any]], int] | None = rowhash.StoredRowHasher(table)
    else:
        batches = read_batches(source, table, batch_size=batch_size, after=after)
        preparers = value_preparers(table, target)
        hasher = RowHasher(table) if table_method == "python" else None
    digest = TableDigest(table.name, method=table_method) if want_digest and hasher is not None else None
    integer_pk = has_integer_pk(table)
    writers = OrderedWriters(source, target, table) if own_transactions and target.vendor == "postgresql" else None
    written = 0
    try:
        for batch in batches:
            rows = prepare(batch, preparers)
            upto = written + len(batch)
            if writers is not None:
                writers.submit(rows, partial(_then, then, batch, upto))
            else:
                with transaction.atomic(using=target.alias) if own_transactions else nullcontext():
                    insert(target, table, rows)
                    then(target, batch, upto)
            if digest is not None and hasher is not None:
                digest.add(batch, hasher, integer_pk)
            written = upto
        if writers is not None:
            writers.finish()
    finally:
        if writers is not None:
            writers.close()
    return written, digest
