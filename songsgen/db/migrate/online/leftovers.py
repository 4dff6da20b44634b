"""What a killed online change leaves. SQLite: capture triggers and a shadow (before the cut-over), or the old
table (after it), found by name. PostgreSQL: an INVALID index, a temporary NOT NULL check. Removed under the
migrate lock; the application's tables and rows are never touched."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.dblock import database_lock
from songsgen.db.exceptions import DatabaseBusy
from songsgen.db.migrate.online import names
from songsgen.db.migrate.online.rebuild import drop_in_chunks, remove_capture
from songsgen.db.problems import Problem


@dataclass(frozen=True)
class Leftover:
    table: str  # the application's table the rebuild was for
    kind: str  # "capture": triggers and/or the shadow, the table as before; "old": the table it replaced

    def describe(self) -> str:
        if self.kind == "index":
            return f"INVALID index {self.table}, left by an interrupted or failed CREATE INDEX CONCURRENTLY"
        if self.kind == "check":
            return f"temporary NOT NULL check {self.table}, left by an interrupted or failed safe SET NOT NULL"
        if self.kind == "capture":
            return (f"unfinished online rebuild of {self.table} (its shadow {names.shadow(self.table)} and capture "
                    "triggers; the table is as before)")
        return f"old copy of {self.table} an online rebuild replaced ({names.old(self.table)})"


# PostgreSQL: an index a killed CREATE INDEX CONCURRENTLY left INVALID (not one being built now), and the
# temporary NOT NULL check of a killed safe SET NOT NULL.
PG_LEFTOVERS = """
SELECT c.relname, 'index' FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE NOT i.indisvalid AND c.relnamespace = current_schema()::regnamespace
   AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid)
UNION ALL
SELECT t.relname || '.' || k.conname, 'check' FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
 WHERE k.contype = 'c' AND k.conname LIKE %s AND t.relnamespace = current_schema()::regnamespace
"""


def find(connection: BaseDatabaseWrapper) -> list[Leftover]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(PG_LEFTOVERS, ["%\\_songsgen\\_notnull"])
            return [Leftover(name, kind) for name, kind in cursor.fetchall()]
    if connection.vendor != "sqlite":
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'trigger') "
                       "AND substr(name, 1, %s) = %s", [len(names.PREFIX), names.PREFIX])
        rows = cursor.fetchall()
    found: set[Leftover] = set()
    for kind, name, table in rows:
        if kind == "trigger" and name.startswith(names.CAPTURE):
            found.add(Leftover(table, "capture"))
        elif kind == "table" and name.startswith(names.SHADOW):
            found.add(Leftover(name[len(names.SHADOW):], "capture"))
        elif kind == "table" and name.startswith(names.OLD):
            found.add(Leftover(name[len(names.OLD):], "old"))
    return sorted(found, key=lambda item: (item.table, item.kind))


def remove(connection: BaseDatabaseWrapper) -> list[Leftover]:
    """Remove every leftover (the caller holds the migrate lock); return them."""
    found = find(connection)
    for item in found:
        if item.kind in ("index", "check"):
            _remove_pg(connection, item)
        elif item.kind == "capture":
            remove_capture(connection, item.table)  # the triggers first: the application writes through them
        else:
            drop_in_chunks(connection, names.old(item.table), inline=False)
    return found


def _remove_pg(connection: BaseDatabaseWrapper, item: Leftover) -> None:
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        if item.kind == "index":  # CONCURRENTLY: outside a transaction, and no write lock
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(item.table)}")
        else:
            table, name = item.table.split(".", 1)
            cursor.execute(f"ALTER TABLE {quote(table)} DROP CONSTRAINT IF EXISTS {quote(name)}")


def dbcheck_problems(connection: BaseDatabaseWrapper) -> list[Problem]:
    """Removed when no migrate runs (the lock is free at once); named otherwise."""
    found = find(connection)
    if not found:
        return []
    try:
        with database_lock(connection.settings_dict, purpose="dbcheck", wait=0):
            removed = remove(connection)
    except (DatabaseBusy, OSError):  # a migrate may be running the rebuild now
        return [Problem("online", item.table, f"{item.describe()}: kept, a migrate holds the database and may be "
                        "running it; the next dbcheck or migrate after it removes it", blocking=False)
                for item in found]
    return [Problem("online", item.table, f"removed the {item.describe()}", blocking=False) for item in removed]
