"""transferdb's table copy: read a table in keyset batches, write each batch below the ORM, digest it on the way.

Two ways to read, chosen per table:

- from SQLite, for tables `songsgen.db.rowhash` can hash: the values as stored (a plain cursor, no ORM
  conversion), hashed on the way for the proof; most values go to PostgreSQL as they are (COPY parses
  the stored text of a datetime, a date, a JSON document itself), the rest through Django's converters;
  to another SQLite database every stored value is already in its storage form;
- otherwise through the ORM (`compare.read_batches`), converted values, hashed as compare.py does when
  that is the table's method (a PostgreSQL source is hashed by one query at the end instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db import rowhash
from songsgen.db.compare import RowHasher, TableDigest, has_integer_pk, read_batches
from songsgen.db.fields import storage_field
from songsgen.db.tables import Table

Preparer = Callable[[Any], Any] | None

# Field classes whose Python values the target's driver stores correctly as they come from the source
# (after the source's converters): no per-value get_db_prep_save() on the hot path. Exact classes
# only; a subclass may override its conversion and goes the slow, always-correct way.
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
# SQLite's stored values that PostgreSQL's COPY reads as they are (text of a datetime, a date, a time, a
# UUID's 32 hex digits, a JSON document; 1/0 for a boolean); a duration (microseconds) or a decimal is
# converted first.
_STORED_AS_IS_POSTGRESQL = {"text", "int", "bool", "datetime", "date", "time", "float", "uuid", "bytes", "json"}


def value_preparers(table: Table, target: BaseDatabaseWrapper) -> list[Preparer]:
    """Per column of ORM-converted values: None to pass the value through, or the target's get_db_prep_save."""
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
    """A stored SQLite value to the target's: the ORM's converters (backend's, then field's), then the target's
    adaptation, as a values_list() and a save would do."""
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


def insert(target: BaseDatabaseWrapper, table: Table, rows: Sequence[Sequence[Any]]) -> None:
    """Write prepared rows below the ORM: COPY on PostgreSQL, executemany on SQLite."""
    qn = target.ops.quote_name
    columns = ", ".join(qn(f.column) for f in table.fields)
    if target.vendor == "postgresql":
        from psycopg.copy import QueuedLibpqWriter  # only PostgreSQL deployments need psycopg

        sql = f"COPY {qn(table.name)} ({columns}) FROM STDIN"
        with target.connection.cursor() as cursor:
            # A writer thread sends while this one formats rows: the server ingests in parallel.
            with cursor.copy(sql, writer=QueuedLibpqWriter(cursor)) as copy:
                for row in rows:
                    copy.write_row(row)
    else:
        marks = ", ".join("?" * len(table.fields))
        cursor = target.connection.cursor()
        try:
            cursor.executemany(f"INSERT INTO {qn(table.name)} ({columns}) VALUES ({marks})", rows)
        finally:
            cursor.close()


@contextmanager
def bulk_session(source: BaseDatabaseWrapper, target: BaseDatabaseWrapper) -> Iterator[None]:
    """Per-connection settings for a bulk load, restored afterwards."""
    if target.vendor == "postgresql":
        # Stored SQLite datetimes are naive text in the source's time zone: COPY reads them in the session's.
        with target.cursor() as cursor:
            cursor.execute("SELECT current_setting('TimeZone')")
            (previous,) = cursor.fetchone()
            zone = source.timezone_name if source.vendor == "sqlite" and settings.USE_TZ else previous
            cursor.execute("SELECT set_config('TimeZone', %s, false)", [zone])
        try:
            yield
        finally:
            with target.cursor() as cursor:
                cursor.execute("SELECT set_config('TimeZone', %s, false)", [previous])
        return
    if target.vendor != "sqlite":
        yield
        return
    # A transfer that is interrupted is resumed, so no fsync per batch; the usual setting comes back.
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
    last = None if after is None else table.pk.get_db_prep_value(after, connection)
    while True:
        with connection.cursor() as cursor:
            if last is None:
                cursor.execute(f"{base} ORDER BY {pk} LIMIT %s", [batch_size])
            else:
                cursor.execute(f"{base} WHERE {pk} > %s ORDER BY {pk} LIMIT %s", [last, batch_size])
            batch = cursor.fetchall()
        if not batch:
            return
        yield batch
        if len(batch) < batch_size:
            return
        last = batch[-1][0]


def method(table: Table, source: BaseDatabaseWrapper, target: BaseDatabaseWrapper) -> str:
    """The checksum method compare.py will use for `table` between these two databases."""
    return rowhash.METHOD if rowhash.supported(table, source, target) else "python"


def copy_batches(
    source: BaseDatabaseWrapper, target: BaseDatabaseWrapper, table: Table, *, batch_size: int, after: Any = None,
    own_transactions: bool = True, want_digest: bool = False,
    then: Callable[[list[tuple[Any, ...]], int], None] = lambda batch, written: None,
) -> tuple[int, TableDigest | None]:
    """The table copy: `table` read from `source` after `after` in key order and written to `target` batch by
    batch (each in a transaction of its own, with `then(batch, rows written so far)` inside it, unless the
    caller holds one). Returns the rows written and, if wanted and computed on the way, the digest of the
    rows read (compare.py's method for this table; none for a PostgreSQL source of a rowhash table, which
    one query hashes at the end). `then` sees the batch as read; its first column is the primary key."""
    table_method = method(table, source, target)
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
    written = 0
    for batch in batches:
        with transaction.atomic(using=target.alias) if own_transactions else nullcontext():
            insert(target, table, prepare(batch, preparers))
            then(batch, written + len(batch))
        if digest is not None and hasher is not None:
            digest.add(batch, hasher, integer_pk)
        written += len(batch)
    return written, digest
