"""Bounded row counts: whether a table is big, answered without counting past the limit."""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper


def bounded_rows(connection: BaseDatabaseWrapper, table: str, limit: int) -> int | None:
    """How many rows `table` holds, counting no further than `limit`; None when there is no such table."""
    with connection.cursor() as cursor:
        if table not in connection.introspection.table_names(cursor):
            return None
        if connection.vendor == "postgresql":
            cursor.execute("SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                           [connection.ops.quote_name(table)])
            row = cursor.fetchone()
            if row and row[0] >= limit:
                return limit
        quoted = connection.ops.quote_name(table)
        cursor.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {quoted} LIMIT {max(int(limit), 0)}) AS bounded")
        return int(cursor.fetchone()[0])


def table_rows_at_least(connection: BaseDatabaseWrapper, table: str, limit: int) -> bool:
    """Whether `table` exists and holds at least `limit` rows (bounded: never counts past `limit`)."""
    if limit <= 0:
        return True
    rows = bounded_rows(connection, table, limit)
    return rows is not None and rows >= limit
