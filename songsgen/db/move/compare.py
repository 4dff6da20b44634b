"""Prove two databases hold the same rows: per table, a row count and an order-independent checksum.

Rows are read through the ORM and hashed from one canonical text, so both engines agree.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, models
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.exceptions import DatabaseUnavailable
from songsgen.db.fields import storage_field
from songsgen.db.move import rowhash
from songsgen.db.move.external import identity, open_database
from songsgen.db.move.tables import Table, dependency_order, existing_tables

DEFAULT_BATCH_SIZE = 5_000
BUCKET_IDS = 1_000  # ids per checksum bucket of an integer primary key
MAX_DETAIL_BUCKETS = 20  # reread at most this many differing buckets to name primary keys
MAX_NAMED_PKS = 20  # name at most this many primary keys per kind of difference
DETAIL_ROW_LIMIT = 100_000  # tables with other primary keys are reread whole only up to this size
_MASK = (1 << 64) - 1


# --- canonical values
# ---------------------------------------------------------------------------------


def _datetime(value: dt.datetime) -> str:
    offset = value.utcoffset()
    # aware, not UTC: in UTC (an aware UTC value keeps its "+00:00", a naive one has none)
    if offset:
        value = value.astimezone(dt.UTC)
    return "t" + value.isoformat(timespec="microseconds")


def _json(value: Any) -> str:
    return "j" + json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=canonical)


_CANONICAL: dict[type, Callable[[Any], str]] = {
    str: lambda v: "s" + v,
    int: lambda v: "i" + str(v),
    bool: lambda v: "b1" if v else "b0",
    float: lambda v: "f" + format(v, ".15g"),
    dt.datetime: _datetime,
    dt.date: lambda v: "d" + v.isoformat(),
    dt.time: lambda v: "h" + v.isoformat(timespec="microseconds"),
    dt.timedelta: lambda v: "u" + str((v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds),
    decimal.Decimal: lambda v: "n" + format(v.normalize(), "f"),
    uuid.UUID: lambda v: "g" + v.hex,
    bytes: lambda v: "x" + v.hex(),
    bytearray: lambda v: "x" + bytes(v).hex(),
    memoryview: lambda v: "x" + bytes(v).hex(),
    dict: _json,
    list: _json,
}


def canonical(value: Any) -> str | None:
    """One value as the same typed text on every engine (UTC, sorted JSON); None stays None."""
    if value is None:
        return None
    convert = _CANONICAL.get(type(value))
    if convert is None:
        # subclasses (e.g. SafeString, a tz-aware subclass)
        for kind, candidate in _CANONICAL.items():
            if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
                convert = candidate
                break
        else:
            return "r" + repr(value)
    return convert(value)


def _text(value: Any) -> str:
    # Length-prefixed, so a separator inside a value can never shift one
    # column's text into the next.
    if type(value) is str:
        return f"{len(value)}:{value}"
    return "\x00" if value is None else str(canonical(value))


def _other(value: Any) -> str:
    return "\x00" if value is None else str(canonical(value))


# Columns whose values every engine returns as the same Python str, or int/bool: those take a short
# path (most columns, most of the time); every other column goes through canonical().
_TEXT_TYPES = {"CharField", "TextField", "EmailField", "SlugField", "URLField"}
_INTEGER_TYPES = {
    "IntegerField", "BigIntegerField", "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField",
    "PositiveSmallIntegerField", "AutoField", "BigAutoField", "SmallAutoField", "BooleanField",
}


def _column_text(field: models.Field) -> Callable[[Any], str]:
    kind = storage_field(field).get_internal_type()
    if kind in _TEXT_TYPES:
        return _text
    if kind in _INTEGER_TYPES:
        return repr  # None, True, 12: repr tells them apart and is the same on every engine
    return _other


class RowHasher:
    """Hashes rows of one table: each column's canonical text, joined, then BLAKE2b to 64 bits."""

    def __init__(self, table: Table) -> None:
        self.columns = [_column_text(f) for f in table.fields]

    def __call__(self, row: Sequence[Any]) -> int:
        """A 64-bit hash of one row."""
        text = "\x1f".join([convert(value) for convert, value in zip(self.columns, row, strict=True)])
        return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


# --- reading
# ------------------------------------------------------------------------------------------


def read_batches(
    connection: BaseDatabaseWrapper, table: Table, *, batch_size: int, after: Any = None,
    pk_range: tuple[int, int] | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of `table` in primary-key order, `batch_size` at a time (keyset, never OFFSET).

    Each batch is one `WHERE pk > last ORDER BY pk LIMIT n` query, so memory holds one batch at most
    however big the table, and each batch costs the same (an index range scan), however deep.
    """
    pk = table.pk.attname
    base = table.model._base_manager.using(connection.alias).order_by(pk)
    if pk_range is not None:
        base = base.filter(**{f"{pk}__gte": pk_range[0], f"{pk}__lt": pk_range[1]})
    columns = [f.attname for f in table.fields]

    def fetch(last: Any) -> list[tuple[Any, ...]]:
        query = base if last is None else base.filter(**{f"{pk}__gt": last})
        # One bounded query per batch, fetched in chunks (fetchmany); a named server-side cursor per
        # batch would only add round trips, the LIMIT already bounds memory.
        return list(query.values_list(*columns)[:batch_size])

    return keyset(fetch, batch_size, after)


def keyset(fetch: Callable[[Any], list[tuple[Any, ...]]], batch_size: int, after: Any = None
           ) -> Iterator[list[tuple[Any, ...]]]:
    """Batches from `fetch(last key or None)` (rows with the key first, in key order, at most
    `batch_size`) until one comes back short: keyset pagination, each batch one bounded query."""
    last = after
    while batch := fetch(last):
        yield batch
        if len(batch) < batch_size:
            return
        last = batch[-1][0]


def count_rows(connection: BaseDatabaseWrapper, table: Table) -> int:
    """COUNT(*) of a table."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table.name)}")
        return int(cursor.fetchone()[0])


def has_integer_pk(table: Table) -> bool:
    """True when the primary key is an integer (then checksums are kept per id range)."""
    return isinstance(storage_field(table.pk), models.IntegerField)


@dataclass
class TableDigest:
    """Count and checksum of one table in one database, per-range sums to narrow differences."""

    table: str
    rows: int = 0
    checksum: int = 0
    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket -> [rows, checksum]
    method: str = "python"  # RowHasher here, or rowhash.METHOD; only digests of one method compare

    def add(self, rows: Sequence[Sequence[Any]], hasher: Callable[[Sequence[Any]], int], integer_pk: bool) -> None:
        """Fold a batch of rows (primary key first) into the digest."""
        for row in rows:
            h = hasher(row)
            self.rows += 1
            self.checksum = (self.checksum + h) & _MASK
            key = row[0] // BUCKET_IDS if integer_pk else 0
            bucket = self.buckets.get(key)
            if bucket is None:
                self.buckets[key] = [1, h]
            else:
                bucket[0] += 1
                bucket[1] = (bucket[1] + h) & _MASK


def digest_table(
    connection: BaseDatabaseWrapper, table: Table, *, batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None, method: str = "python",
) -> TableDigest:
    """Read a whole table and return its digest (by `method`: our hashing or rowhash's)."""
    digest = TableDigest(table.name, method=method)
    if method == rowhash.METHOD:
        for key, rows, total in rowhash.bucket_sums(connection, table):
            digest.buckets[key] = [rows, total]
            digest.rows += rows
            digest.checksum = (digest.checksum + total) & _MASK
        if on_batch is not None:
            on_batch(digest.rows)
        return digest
    integer_pk, hasher = has_integer_pk(table), RowHasher(table)
    for batch in read_batches(connection, table, batch_size=batch_size):
        digest.add(batch, hasher, integer_pk)
        if on_batch is not None:
            on_batch(len(batch))
    return digest


# --- comparing
# ----------------------------------------------------------------------------------------


@dataclass
class TableComparison:
    """How one table compares between source and target."""

    table: str
    source_rows: int | None = None
    target_rows: int | None = None
    source_checksum: int | None = None
    target_checksum: int | None = None
    missing_in_target: list[Any] = field(default_factory=list)
    extra_in_target: list[Any] = field(default_factory=list)
    changed: list[Any] = field(default_factory=list)
    more_not_named: bool = False  # differences exist beyond the primary keys listed
    error: str = ""  # why the table could not be compared (missing table, unreadable columns)
    absent: bool = False  # on neither side: nothing to compare

    @property
    def equal(self) -> bool:
        return self.absent or (
            not self.error and self.source_rows == self.target_rows and self.source_checksum == self.target_checksum
        )

    def describe(self) -> str:
        """What differs, in words ('' when equal)."""
        if self.equal:
            return ""
        if self.error:
            return self.error
        parts = []
        if self.source_rows != self.target_rows:
            parts.append(f"row count {self.source_rows} in source, {self.target_rows} in target")
        else:
            parts.append("same row count, different checksum")
        for label, pks in (("missing in target", self.missing_in_target), ("extra in target", self.extra_in_target),
                           ("changed", self.changed)):
            if pks:
                parts.append(f"{label}: pk {', '.join(str(pk) for pk in pks)}")
        if self.more_not_named:
            parts.append("(more differences than listed)")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for `dbcompare --json`."""
        return {
            "table": self.table, "equal": self.equal, "absent": self.absent,
            "source_rows": self.source_rows, "target_rows": self.target_rows,
            "source_checksum": None if self.source_checksum is None else f"{self.source_checksum:016x}",
            "target_checksum": None if self.target_checksum is None else f"{self.target_checksum:016x}",
            "missing_in_target": [str(pk) for pk in self.missing_in_target],
            "extra_in_target": [str(pk) for pk in self.extra_in_target],
            "changed": [str(pk) for pk in self.changed],
            "more_not_named": self.more_not_named, "error": self.error,
        }


@dataclass
class Comparison:
    """The result of comparing every table."""

    tables: list[TableComparison]

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)

    @property
    def differences(self) -> list[TableComparison]:
        return [t for t in self.tables if not t.equal]


def _row_hashes(
    connection: BaseDatabaseWrapper, table: Table, pk_range: tuple[int, int] | None, method: str,
) -> dict[Any, int]:
    if method == rowhash.METHOD:
        return rowhash.row_hashes(connection, table, pk_range)
    hashes: dict[Any, int] = {}
    row_hash = RowHasher(table)
    for batch in read_batches(connection, table, batch_size=DEFAULT_BATCH_SIZE, pk_range=pk_range):
        for row in batch:
            hashes[row[0]] = row_hash(row)
    return hashes


def _name_differences(
    result: TableComparison, table: Table, source: BaseDatabaseWrapper, target: BaseDatabaseWrapper,
    src: TableDigest, dst: TableDigest,
) -> None:
    """Reread only the differing primary-key ranges, row by row, to name the differing keys."""
    if has_integer_pk(table):
        keys = sorted(k for k in src.buckets.keys() | dst.buckets.keys() if src.buckets.get(k) != dst.buckets.get(k))
        ranges: list[tuple[int, int] | None] = [(k * BUCKET_IDS, (k + 1) * BUCKET_IDS) for k in keys]
    elif max(src.rows, dst.rows) <= DETAIL_ROW_LIMIT:
        ranges = [None]
    else:
        result.more_not_named = True
        return
    if len(ranges) > MAX_DETAIL_BUCKETS:
        ranges = ranges[:MAX_DETAIL_BUCKETS]
        result.more_not_named = True
    for pk_range in ranges:
        a = _row_hashes(source, table, pk_range, src.method)
        b = _row_hashes(target, table, pk_range, dst.method)
        result.missing_in_target.extend(sorted(a.keys() - b.keys(), key=str))
        result.extra_in_target.extend(sorted(b.keys() - a.keys(), key=str))
        result.changed.extend(sorted((k for k in a.keys() & b.keys() if a[k] != b[k]), key=str))
    for name in ("missing_in_target", "extra_in_target", "changed"):
        pks = getattr(result, name)
        if len(pks) > MAX_NAMED_PKS:
            setattr(result, name, pks[:MAX_NAMED_PKS])
            result.more_not_named = True


def compare_table(
    source: BaseDatabaseWrapper, target: BaseDatabaseWrapper, table: Table, *,
    source_tables: set[str], target_tables: set[str], batch_size: int = DEFAULT_BATCH_SIZE,
    source_digest: TableDigest | None = None, target_digest: TableDigest | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> TableComparison:
    """Compare one table; a missing or unreadable table is a difference, not an exception."""
    result = TableComparison(table.name)
    in_source, in_target = table.name in source_tables, table.name in target_tables
    if not in_source and not in_target:
        result.absent = True
        return result
    if not (in_source and in_target):
        result.error = f"table missing in the {'target' if in_source else 'source'} database"
        return result
    try:
        method = rowhash.method(table, source, target)
        src = source_digest if source_digest is not None and source_digest.method == method else digest_table(
            source, table, batch_size=batch_size, on_batch=on_batch, method=method)
        dst = target_digest if target_digest is not None and target_digest.method == method else digest_table(
            target, table, batch_size=batch_size, on_batch=on_batch, method=method)
    except DatabaseError as exc:
        result.error = f"cannot read the table ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})"
        return result
    result.source_rows, result.target_rows = src.rows, dst.rows
    result.source_checksum, result.target_checksum = src.checksum, dst.checksum
    if not result.equal:
        _name_differences(result, table, source, target, src, dst)
    return result


def compare_connections(
    source: BaseDatabaseWrapper, target: BaseDatabaseWrapper, tables: Sequence[Table], *,
    batch_size: int = DEFAULT_BATCH_SIZE, on_table: Callable[[TableComparison], None] | None = None,
    source_digests: dict[str, TableDigest] | None = None, target_digests: dict[str, TableDigest] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Comparison:
    """Compare every table of `tables` between two open connections (known digests reused)."""
    source_tables, target_tables = existing_tables(source), existing_tables(target)
    results = []
    for table in tables:
        result = compare_table(
            source, target, table, source_tables=source_tables, target_tables=target_tables,
            batch_size=batch_size, source_digest=(source_digests or {}).get(table.name),
            target_digest=(target_digests or {}).get(table.name), on_batch=on_batch,
        )
        results.append(result)
        if on_table is not None:
            on_table(result)
    return Comparison(results)


def render(comparison: Comparison) -> list[str]:
    """The results table, one line per table, then a verdict line."""
    rows = [("table", "source rows", "target rows", "checksum", "result")]
    for t in comparison.tables:
        if t.absent:
            rows.append((t.table, "-", "-", "-", "absent on both"))
            continue
        same_sum = t.source_checksum is not None and t.source_checksum == t.target_checksum
        rows.append((
            t.table,
            "-" if t.source_rows is None else f"{t.source_rows:,}",
            "-" if t.target_rows is None else f"{t.target_rows:,}",
            "-" if t.source_checksum is None else (f"{t.source_checksum:016x}" if same_sum else "DIFFERS"),
            "ok" if t.equal else "DIFFERS: " + t.describe(),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}" for r in rows
    ]
    differing = comparison.differences
    lines.append(
        f"All {len(comparison.tables)} tables equal." if not differing
        else f"{len(differing)} of {len(comparison.tables)} tables differ: {', '.join(t.table for t in differing)}."
    )
    return lines


def compare_databases(
    source_url: str, target_url: str, *, batch_size: int = DEFAULT_BATCH_SIZE,
    on_table: Callable[[TableComparison], None] | None = None,
) -> Comparison:
    """Open two database URLs and compare every table the code knows."""
    tables = dependency_order()
    with open_database(source_url, role="source") as source, open_database(target_url, role="target") as target:
        if identity(source) == identity(target):
            raise DatabaseUnavailable("The two URLs name the same database; compare it with another one.")
        return compare_connections(source, target, tables, batch_size=batch_size, on_table=on_table)
