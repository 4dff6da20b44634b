"""Row checksums computed where the rows are: one aggregate query on PostgreSQL, a cursor on SQLite.

Both engines build the same canonical text per row from what they store, so the sums compare.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import hashlib
import json
import struct
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.fields import storage_field
from songsgen.db.move.tables import Table

METHOD = "md5-sql"  # the name a TableDigest carries when computed by this module
BUCKET_IDS = 1_000  # the same buckets as compare.py
# BAD: prefix of values not in storage form (never equal to anything)
NULL, SEP, BAD = "\x1e", "\x1f", "\x1d"
_FETCH = 5_000
_TEXT = (models.CharField, models.TextField, models.EmailField, models.SlugField, models.URLField,
         models.FilePathField)
_INTEGER = (models.IntegerField, models.BigIntegerField, models.SmallIntegerField, models.PositiveIntegerField,
            models.PositiveBigIntegerField, models.PositiveSmallIntegerField, models.AutoField,
            models.BigAutoField, models.SmallAutoField)


def kind(field: models.Field) -> str | None:
    """The canonical form of a column's values, by the exact class of the field that stores them."""
    cls = type(storage_field(field))
    if cls in _TEXT:
        return "text"
    if cls in _INTEGER:
        return "int"
    return {
        models.BooleanField: "bool", models.DateTimeField: "datetime", models.DateField: "date",
        models.TimeField: "time", models.FloatField: "float", models.UUIDField: "uuid", models.BinaryField: "bytes",
        models.DurationField: "duration", models.JSONField: "json",
    }.get(cls)


def supported(table: Table, *connections: BaseDatabaseWrapper) -> bool:
    """True when every column of `table` has a canonical form and every connection computes it."""
    return all(kind(f) is not None for f in table.fields) and all(map(_can_hash, connections))


def method(table: Table, source: BaseDatabaseWrapper, target: BaseDatabaseWrapper) -> str:
    """The checksum method compare.py uses for `table` between these two databases."""
    return METHOD if supported(table, source, target) else "python"


_CAPABLE: weakref.WeakKeyDictionary[BaseDatabaseWrapper, bool] = weakref.WeakKeyDictionary()


def _can_hash(connection: BaseDatabaseWrapper) -> bool:
    """Whether this database computes the canonical hashes: asked once per connection."""
    if connection not in _CAPABLE:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('server_encoding'), current_setting('server_version_num')")
                encoding, version = cursor.fetchone()
            # md5 of UTF-8; interval epochs
            _CAPABLE[connection] = encoding == "UTF8" and int(version) >= 140000
        else:  # SQLite's stored datetimes are read as UTC
            _CAPABLE[connection] = connection.vendor == "sqlite" and not (
                settings.USE_TZ and connection.timezone_name != "UTC")
    return _CAPABLE[connection]


def integer_pk(table: Table) -> bool:
    """True when the primary key is an integer (then sums are kept per bucket of ids)."""
    return kind(table.pk) == "int"


# --- SQLite: stored values to canonical text, in Python
# ----------------------------------------------------


def _bad(value: Any) -> str:
    return BAD + repr(value)


def _text(v: Any) -> str:
    if type(v) is str:
        return f"{len(v)}:{v}"
    return NULL if v is None else _bad(v)


def _int(v: Any) -> str:
    if type(v) is int:
        return str(v)
    return NULL if v is None else _bad(v)


def _bool(v: Any) -> str:
    if v == 0 or v == 1:
        return "1" if v else "0"
    return NULL if v is None else _bad(v)


def _datetime(v: Any) -> str:
    if type(v) is str:
        if len(v) == 26 and v[10] == " " and v[19] == ".":  # as Django stores it: naive UTC
            return v
        if len(v) == 19 and v[10] == " ":
            return v + ".000000"
        try:
            parsed = dt.datetime.fromisoformat(v)
        except ValueError:
            return _bad(v)
        if parsed.utcoffset() is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed.isoformat(" ", "microseconds")
    return NULL if v is None else _bad(v)


def _date(v: Any) -> str:
    if type(v) is str and len(v) == 10:
        return v
    return NULL if v is None else _bad(v)


def _time(v: Any) -> str:
    if type(v) is str:
        if len(v) == 15 and v[8] == ".":
            return v
        if len(v) == 8:
            return v + ".000000"
    return NULL if v is None else _bad(v)


def _float(v: Any) -> str:
    if type(v) is float or type(v) is int:
        return struct.pack(">d", v).hex()
    return NULL if v is None else _bad(v)


def _uuid(v: Any) -> str:
    if type(v) is str and len(v) == 32:
        return v.lower()
    return NULL if v is None else _bad(v)


def _bytes(v: Any) -> str:
    if isinstance(v, bytes | memoryview):
        return bytes(v).hex()
    return NULL if v is None else _bad(v)


def _jsonb_key(key: str) -> tuple[int, bytes]:
    raw = key.encode("utf-8", "surrogatepass")
    return len(raw), raw


def jsonb_text(value: Any) -> str:
    """A decoded JSON value (numbers Decimal or int) as PostgreSQL prints it stored in jsonb."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: _jsonb_key(item[0]))
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {jsonb_text(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    if isinstance(value, decimal.Decimal):
        return format(value.copy_abs() if value.is_zero() else value, "f")
    if value is True or value is False or value is None:
        return json.dumps(value)
    if isinstance(value, int | str):
        return json.dumps(value, ensure_ascii=False)
    raise ValueError(f"not a JSON value: {value!r}")


_DECODER = json.JSONDecoder(parse_float=decimal.Decimal)  # numbers as written, as jsonb keeps them


@functools.lru_cache(maxsize=4096)  # JSON columns repeat their few shapes ("{}") row after row
def _json_text(v: str) -> str:
    try:
        return jsonb_text(_DECODER.decode(v))
    except ValueError:
        return _bad(v)


def _json(v: Any) -> str:
    if type(v) is str:
        return _json_text(v)
    return NULL if v is None else _bad(v)


_PYTHON: dict[str, Callable[[Any], str]] = {
    "text": _text, "int": _int, "bool": _bool, "datetime": _datetime, "date": _date, "time": _time,
    "float": _float, "uuid": _uuid, "bytes": _bytes, "duration": _int, "json": _json,
}


# The common case of a column, inlined into the row's expression (a function call per value costs
# more than the hash); anything else falls through to the column's function above.
_INLINE = {
    "text": "(f'{{len({v})}}:{{{v}}}' if type({v}) is str else _text({v}))",
    "int": "(str({v}) if type({v}) is int else _int({v}))",
}


class StoredRowHasher:
    """Hashes rows of one table as SQLite stores them (plain cursor values): 64-bit canonical."""

    def __init__(self, table: Table) -> None:
        kinds = [kind(f) or "" for f in table.fields]
        # One generated expression per table: row[i] into its column's canonical text,
        # joined. Only the column positions and the fixed templates above go into the source,
        # never data or names.
        parts = [_INLINE.get(k, f"_{k}({{v}})").format(v=f"r[{i}]") for i, k in enumerate(kinds)]
        namespace = {f"_{k}": _PYTHON[k] for k in _PYTHON} | {"_sep": SEP}
        self.text: Callable[[Sequence[Any]], str] = eval(f"lambda r: _sep.join(({', '.join(parts)},))", namespace)  # noqa: S307

    def __call__(self, row: Sequence[Any]) -> int:
        """A 64-bit hash of one row, as PostgreSQL's aggregate computes it."""
        digest = hashlib.md5(self.text(row).encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big")


# --- PostgreSQL: the same text in SQL
# ---------------------------------------------------------------------


def _pg_column(field: models.Field, column: str) -> str:
    column_kind = kind(field)
    datetime_sql = f"{column} AT TIME ZONE 'UTC'" if settings.USE_TZ else column
    sql = {
        "text": f"length({column}) || ':' || {column}",
        "int": f"{column}::text",
        "bool": f"{column}::int::text",
        "datetime": f"to_char({datetime_sql}, 'YYYY-MM-DD HH24:MI:SS.US')",
        "date": f"to_char({column}, 'YYYY-MM-DD')",
        "time": f"to_char(date '2000-01-01' + {column}, 'HH24:MI:SS.US')",
        "float": f"encode(float8send({column}), 'hex')",
        "uuid": f"replace({column}::text, '-', '')",
        "bytes": f"encode({column}, 'hex')",
        "duration": f"(extract(epoch from {column}) * 1000000)::bigint::text",
        "json": f"{column}::text",
    }[column_kind or ""]
    return f"coalesce({sql}, chr(30))"


def _pg_hash(connection: BaseDatabaseWrapper, table: Table) -> str:
    qn = connection.ops.quote_name
    text = "concat_ws(chr(31), " + ", ".join(_pg_column(f, qn(f.column)) for f in table.fields) + ")"
    return f"('x' || left(md5({text}), 16))::bit(64)::bigint"


def _pg_bucket(connection: BaseDatabaseWrapper, table: Table) -> str:
    if not integer_pk(table):
        return "0"
    pk = connection.ops.quote_name(table.pk.column)
    return f"CASE WHEN {pk} >= 0 THEN {pk} / {BUCKET_IDS} ELSE ({pk} + 1) / {BUCKET_IDS} - 1 END"


# --- digests and row hashes on either engine
# --------------------------------------------------------------


def bucket_sums(connection: BaseDatabaseWrapper, table: Table) -> Iterator[tuple[int, int, int]]:
    """(bucket, rows, sum of hashes mod 2**64) of every bucket of `table`, where the rows are."""
    qn = connection.ops.quote_name
    if connection.vendor == "postgresql":
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            # The planner cannot tell there are few buckets and would sort every
            # row by bucket, on disk.
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute(
                f"SELECT {_pg_bucket(connection, table)} AS b, count(*), sum({_pg_hash(connection, table)}) "
                f"FROM {qn(table.name)} GROUP BY b"
            )
            for bucket, rows, total in cursor.fetchall():
                yield int(bucket), int(rows), int(total) % (1 << 64)
        return
    hasher, by_id = StoredRowHasher(table), integer_pk(table)
    sums: dict[int, list[int]] = {}
    for row in _stored_rows(connection, table, None):
        key = row[0] // BUCKET_IDS if by_id and type(row[0]) is int else 0
        entry = sums.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += hasher(row)
    for key, (rows, total) in sums.items():
        yield key, rows, total % (1 << 64)


def stored_columns(connection: BaseDatabaseWrapper, table: Table) -> str:
    """The select list of `table`'s columns as SQLite stores them: a unary + (a no-op) on each
    column hides its declared type, so the driver's converters that Django registers by type
    name leave it alone."""
    return ", ".join(f"+{connection.ops.quote_name(f.column)}" for f in table.fields)


def _in_range(connection: BaseDatabaseWrapper, table: Table, pk_range: tuple[int, int] | None
              ) -> tuple[str, list[Any]]:
    """The WHERE clause (and parameters) for primary keys in [low, high); none for all rows."""
    if pk_range is None:
        return "", []
    pk = connection.ops.quote_name(table.pk.column)
    return f" WHERE {pk} >= %s AND {pk} < %s", list(pk_range)


def _stored_rows(
    connection: BaseDatabaseWrapper, table: Table, pk_range: tuple[int, int] | None,
) -> Iterator[tuple[Any, ...]]:
    """Every row of a SQLite table as stored, primary key first, in one read (one snapshot)."""
    where, params = _in_range(connection, table, pk_range)
    sql = f"SELECT {stored_columns(connection, table)} FROM {connection.ops.quote_name(table.name)}{where}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(_FETCH):
            yield from batch


def row_hashes(connection: BaseDatabaseWrapper, table: Table, pk_range: tuple[int, int] | None) -> dict[Any, int]:
    """{primary key: 64-bit hash} of rows in `pk_range` (all when None); keys as the ORM's."""
    qn, key = connection.ops.quote_name, table.pk.to_python
    if connection.vendor == "postgresql":
        where, params = _in_range(connection, table, pk_range)
        sql = f"SELECT {qn(table.pk.column)}, {_pg_hash(connection, table)} FROM {qn(table.name)}{where}"
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return {key(pk): h % (1 << 64) for pk, h in cursor.fetchall()}
    hasher = StoredRowHasher(table)
    return {key(row[0]): hasher(row) for row in _stored_rows(connection, table, pk_range)}
