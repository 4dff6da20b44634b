"""The whole state of a database, to compare before and after: schema dump and per-table row checksums."""

from __future__ import annotations

import hashlib
import re

from django.db.backends.base.base import BaseDatabaseWrapper


def schema_dump(connection: BaseDatabaseWrapper) -> list[tuple]:
    """Every table, index, trigger and constraint definition, sorted."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
            return [tuple(row) for row in cursor.fetchall()]
        cursor.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, column_name"
        )
        columns = [("column", *row) for row in cursor.fetchall()]
        cursor.execute("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 2")
        indexes = [("index", table, name, _normalized(definition)) for table, name, definition in cursor.fetchall()]
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint "
            "WHERE connamespace = 'public'::regnamespace ORDER BY 2"
        )
        # A restored database re-parses CHECKs and partial-index conditions from their text: the same, printed with
        # other casts and parentheses (IN (...) comes back as = ANY (ARRAY[...::varchar::text])).
        constraints = [("constraint", table, name, _normalized(definition), valid)
                       for table, name, definition, valid in cursor.fetchall()]
        return columns + indexes + constraints


def _normalized(definition: str) -> str:
    text = re.sub(r"::[a-z ]+(\[\])?", "", definition)
    return re.sub(r"[()\s]", "", text)


def row_checksums(connection: BaseDatabaseWrapper) -> dict[str, tuple[int, str]]:
    """Per table: (row count, sha256 of every row in primary-key order)."""
    result = {}
    with connection.cursor() as cursor:
        tables = sorted(connection.introspection.table_names(cursor))
        for table in tables:
            qn = connection.ops.quote_name(table)
            cursor.execute(f"SELECT * FROM {qn} ORDER BY 1")
            digest = hashlib.sha256()
            count = 0
            for row in cursor.fetchall():
                digest.update(repr(row).encode())
                count += 1
            result[table] = (count, digest.hexdigest())
    return result


def database_state(connection: BaseDatabaseWrapper) -> dict:
    """Schema and data, comparable with ==."""
    return {"schema": schema_dump(connection), "rows": row_checksums(connection)}
