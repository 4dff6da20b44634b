"""What a killed online rebuild leaves: capture triggers and a shadow (before its cut-over), or the
old table (after it). Found by name, removed under the migrate lock; the table itself is never touched."""

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
        if self.kind == "capture":
            return (f"unfinished online rebuild of {self.table} (its shadow {names.shadow(self.table)} and capture "
                    "triggers; the table is as before)")
        return f"old copy of {self.table} an online rebuild replaced ({names.old(self.table)})"


def find(connection: BaseDatabaseWrapper) -> list[Leftover]:
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
        if item.kind == "capture":
            remove_capture(connection, item.table)  # the triggers first: the application writes through them
        else:
            drop_in_chunks(connection, names.old(item.table), inline=False)
    return found


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
