"""Bulk load into an empty PostgreSQL table without its secondary indexes and foreign keys.

Building each index once after the load is several times cheaper than keeping it up row by row.
"""

from __future__ import annotations

import time

from django.db import DatabaseError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.move.tables import Table, existing_tables

DEFERRED_TABLE = "songsgen_transfer_deferred"
LOCK_TIMEOUT = "1s"
LOCK_ATTEMPTS = 5  # NOWAIT tries, 20-100 ms apart


def _saved(target: BaseDatabaseWrapper, table: str | None) -> list[tuple[str, str, str, bool]]:
    if target.vendor != "postgresql" or DEFERRED_TABLE not in existing_tables(target):
        return []
    with target.cursor() as cursor:
        where = "" if table is None else " WHERE table_name = %s"
        # Indexes first (kind 1), the biggest (GIN) first of those; foreign keys last.
        cursor.execute(f"SELECT table_name, name, create_sql, kind = 1 FROM {DEFERRED_TABLE}{where} "
                       "ORDER BY kind DESC, create_sql LIKE '%% USING gin %%' DESC, name",
                       [] if table is None else [table])
        return list(cursor.fetchall())


def saved_statements(target: BaseDatabaseWrapper, table: str) -> list[tuple[str, str, bool]]:
    """(name, statement, is an index) of `table`'s deferred objects, indexes first."""
    return [(name, create_sql, is_index) for _, name, create_sql, is_index in _saved(target, table)]


def defer(target: BaseDatabaseWrapper, table: Table) -> int:
    """Drop and save `table`'s secondary indexes and foreign keys (PostgreSQL); how many."""
    if target.vendor != "postgresql":
        return 0
    # a reader's short query passes; a writer's open transaction stays
    for attempt in range(LOCK_ATTEMPTS):
        dropped = _defer(target, table)
        if dropped is not None:
            return dropped
        time.sleep(0.02 * (attempt + 1))
    return 0  # someone else holds the table: load it with its indexes


def _defer(target: BaseDatabaseWrapper, table: Table) -> int | None:
    """One attempt at dropping and saving; None when a lock was not free."""
    qn = target.ops.quote_name
    try:
        with transaction.atomic(using=target.alias), target.cursor() as cursor:
            # Never wait on another session's lock (the table is theirs right now); the
            # timeout is a backstop.
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            cursor.execute(f"LOCK TABLE {qn(table.name)} IN ACCESS EXCLUSIVE MODE NOWAIT")
            referenced = sorted({qn(f.related_model._meta.db_table) for f in table.fields
                                 if isinstance(f.related_model, type) and f.related_model is not table.model})
            if referenced:
                cursor.execute(f"LOCK TABLE {', '.join(referenced)} IN SHARE ROW EXCLUSIVE MODE NOWAIT")
            cursor.execute(
                "SELECT 1, c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass AND NOT i.indisprimary "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) "
                "UNION ALL SELECT 0, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'f'",
                [qn(table.name), qn(table.name)],
            )
            found = cursor.fetchall()
            if not found:
                return 0
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {DEFERRED_TABLE} (table_name varchar(255) NOT NULL, "
                "name varchar(255) NOT NULL, kind integer NOT NULL, create_sql text NOT NULL, "
                "PRIMARY KEY (table_name, name))"
            )
            for is_index, name, definition in found:
                create = definition if is_index else (
                    f"ALTER TABLE {qn(table.name)} ADD CONSTRAINT {qn(name)} {definition}")
                cursor.execute(
                    f"INSERT INTO {DEFERRED_TABLE} (table_name, name, kind, create_sql) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING", [table.name, name, is_index, create],
                )
                if is_index:
                    cursor.execute(f"DROP INDEX {qn(name)}")
                else:
                    cursor.execute(f"ALTER TABLE {qn(table.name)} DROP CONSTRAINT {qn(name)}")
            return len(found)
    except DatabaseError as exc:
        # lock_not_available
        if getattr(getattr(exc, "__cause__", None), "sqlstate", None) == "55P03":
            return None
        raise


def _exists(target: BaseDatabaseWrapper, table: str, name: str) -> bool:
    with target.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_class WHERE relname = %s AND relnamespace = current_schema()::regnamespace "
            "UNION ALL SELECT 1 FROM pg_constraint WHERE conname = %s AND conrelid = %s::regclass",
            [name, name, target.ops.quote_name(table)],
        )
        return cursor.fetchone() is not None


def _rebuild(target: BaseDatabaseWrapper, table: str, name: str, create_sql: str) -> bool:
    ran = not _exists(target, table, name)
    with target.cursor() as cursor:
        if ran:
            cursor.execute(create_sql)
        cursor.execute(f"DELETE FROM {DEFERRED_TABLE} WHERE table_name = %s AND name = %s", [table, name])
    return ran


def rebuild_one(target: BaseDatabaseWrapper, table: str, name: str, create_sql: str) -> bool:
    """Rebuild one index or foreign key, in a transaction of its own; False if already there."""
    with transaction.atomic(using=target.alias):
        return _rebuild(target, table, name, create_sql)


def restore(target: BaseDatabaseWrapper, table: str | None = None) -> int:
    """Rebuild what `table` (every table when None; the saved-statements table then goes too) has
    saved, in the caller's transaction or one of its own; the number of statements run."""
    if target.vendor != "postgresql" or DEFERRED_TABLE not in existing_tables(target):
        return 0
    ran = 0
    with transaction.atomic(using=target.alias):
        for table_name, name, create_sql, _ in _saved(target, table):
            ran += _rebuild(target, table_name, name, create_sql)
        if table is None:
            with target.cursor() as cursor:
                cursor.execute(f"DROP TABLE {DEFERRED_TABLE}")
    return ran
