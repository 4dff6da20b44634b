"""What a killed online change leaves. SQLite: capture triggers and a shadow (before the cut-over), or the old
table (after it), found by name. PostgreSQL: an INVALID index, a temporary NOT NULL check (removed), a CHECK or
foreign key left NOT VALID between its ADD and its VALIDATE (validated). Handled under the migrate lock; the
application's tables and rows are never touched."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
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
        if self.kind == "notvalid":
            return (f"NOT VALID constraint {self.table}, left by an interrupted safe ADD CONSTRAINT between its ADD "
                    "and its VALIDATE")
        if self.kind == "index":
            return f"INVALID index {self.table}, left by an interrupted or failed CREATE INDEX CONCURRENTLY"
        if self.kind == "check":
            return f"temporary NOT NULL check {self.table}, left by an interrupted or failed safe SET NOT NULL"
        if self.kind == "capture":
            return (f"unfinished online rebuild of {self.table} (its shadow {names.shadow(self.table)} and capture "
                    "triggers; the table is as before)")
        return f"old copy of {self.table} an online rebuild replaced ({names.old(self.table)})"

    def done(self) -> str:
        """What handling it did, for the log."""
        return f"{'Validated' if self.kind == 'notvalid' else 'Removed'} the {self.describe()}."

    def kept(self) -> str:
        """Why it is still there after `remove`: only a NOT VALID constraint that rows violate stays."""
        return (f"Kept the {self.describe()}: VALIDATE failed (existing rows violate it, or another session's lock "
                "held it past SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS). It checks new rows only; correct the rows, then run "
                "`manage.py dbcheck`, which validates it.")


# PostgreSQL: an index a killed CREATE INDEX CONCURRENTLY left INVALID (not one being built now), and the
# temporary NOT NULL check of a killed safe SET NOT NULL.
PG_LEFTOVERS = """
SELECT c.relname, 'index' FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE NOT i.indisvalid AND c.relnamespace = current_schema()::regnamespace
   AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid)
UNION ALL
SELECT t.relname || '.' || k.conname, 'check' FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
 WHERE k.contype = 'c' AND k.conname LIKE %s AND t.relnamespace = current_schema()::regnamespace
UNION ALL
SELECT t.relname || '.' || k.conname, 'notvalid' FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
 WHERE k.contype IN ('c', 'f') AND NOT k.convalidated AND k.conname NOT LIKE %s
   AND t.relnamespace = current_schema()::regnamespace
"""
# A NOT VALID constraint checks new rows only; left by a kill between ADD … NOT VALID and VALIDATE (safeddl/rewrite.py),
# it would stay so for good: the resumed migration sees the constraint and skips its operation.


def find(connection: BaseDatabaseWrapper) -> list[Leftover]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(PG_LEFTOVERS, ["%\\_songsgen\\_notnull"] * 2)
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
    """Remove (or validate) every leftover (the caller holds the migrate lock); return those handled."""
    found = find(connection)
    handled: list[Leftover] = []
    for item in found:
        if item.kind == "notvalid":
            if _validate(connection, item):
                handled.append(item)
            continue
        handled.append(item)
        if item.kind in ("index", "check"):
            _remove_pg(connection, item)
        elif item.kind == "capture":
            remove_capture(connection, item.table)  # the triggers first: the application writes through them
        else:
            drop_in_chunks(connection, names.old(item.table), inline=False)
    return handled


def _validate(connection: BaseDatabaseWrapper, item: Leftover) -> bool:
    """VALIDATE (a scan under SHARE UPDATE EXCLUSIVE: writers go on); False when existing rows violate it."""
    quote = connection.ops.quote_name
    table, name = item.table.split(".", 1)
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            # never queued behind a long transaction for good: the migrate's own lock timeout
            cursor.execute("SET LOCAL lock_timeout = %s", [f"{int(settings.MIGRATE_LOCK_TIMEOUT_MS)}ms"])
            cursor.execute(f"ALTER TABLE {quote(table)} VALIDATE CONSTRAINT {quote(name)}")
    except (IntegrityError, OperationalError):  # rows violate it, or another session's lock held it off
        return False
    return True


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
    kept = [item for item in found if item not in removed]
    return ([Problem("online", item.table, item.done()[0].lower() + item.done()[1:-1], blocking=False)
             for item in removed]
            + [Problem("online", item.table, item.kept(), blocking=True) for item in kept])
