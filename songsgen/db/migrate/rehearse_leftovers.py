"""Scratch copies a killed rehearsal left behind, found and removed under the migrate lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db import backup
from songsgen.db.dblock import database_lock
from songsgen.db.exceptions import DatabaseBusy
from songsgen.db.migrate.rehearse import FILE_PREFIX, SCRATCH_PREFIX, scratch_comment
from songsgen.db.problems import Problem

# mkstemp's eight random characters; the database's name before them since the
# copies were named for it.
_FILE = re.compile(rf"{re.escape(FILE_PREFIX)}(?:(?P<stem>.+)-)?[a-z0-9_]{{8}}\.sqlite3(?:-wal|-shm|-journal)?")


@dataclass(frozen=True)
class Leftover:
    """One scratch copy: the SQLite file's path (its -wal/-shm counted) or the database name."""

    name: str
    size: int | None  # bytes; None when the server does not say

    def describe(self) -> str:
        size = "" if self.size is None else (f"{self.size / 2**20:,.1f} MiB " if self.size >= 2**20
                                             else f"{self.size / 2**10:,.0f} KiB ")
        return f"{size}scratch copy {self.name} left by a rehearsal that was killed"


def leftovers(connection: BaseDatabaseWrapper, folder: Path | None = None) -> list[Leftover]:
    """This database's scratch copies (SQLite: in `folder`, default backups), in use or not."""
    if connection.vendor == "sqlite":
        return _sqlite_leftovers(connection, Path(settings.BACKUP_DIR) if folder is None else folder)
    if connection.vendor == "postgresql":
        return _pg_leftovers(connection)
    return []


def _sqlite_leftovers(connection: BaseDatabaseWrapper, folder: Path) -> list[Leftover]:
    stem = backup.sqlite_path(connection.settings_dict).stem
    sizes: dict[Path, int] = {}
    if not folder.is_dir():
        return []
    for path in folder.iterdir():
        match = _FILE.fullmatch(path.name)
        if match and match.group("stem") in (None, stem):
            base = folder / (path.name.split(".sqlite3", 1)[0] + ".sqlite3")
            try:
                sizes[base] = sizes.get(base, 0) + path.stat().st_size
            except FileNotFoundError:
                continue
    return [Leftover(str(path), size) for path, size in sorted(sizes.items())]


def _pg_leftovers(connection: BaseDatabaseWrapper) -> list[Leftover]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT d.datname, CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN pg_database_size(d.oid) END "
            "FROM pg_database d WHERE d.datname LIKE %s AND (shobj_description(d.oid, 'pg_database') = %s "
            "OR (shobj_description(d.oid, 'pg_database') IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname))) ORDER BY 1",
            [SCRATCH_PREFIX.replace("_", r"\_") + "%", scratch_comment(connection.settings_dict)],
        )
        return [Leftover(name, None if size is None else int(size)) for name, size in cursor.fetchall()]


def remove_leftovers(connection: BaseDatabaseWrapper, folder: Path | None = None) -> list[Leftover]:
    """Remove this database's scratch copies (the caller holds the migrate lock); the removed."""
    removed: list[Leftover] = []
    for item in leftovers(connection, folder):
        if connection.vendor == "sqlite":
            try:
                backup.remove_file(Path(item.name))
            except OSError:
                continue  # a read-only folder: dbcheck keeps naming it
        else:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(item.name)} WITH (FORCE)")
            except DatabaseError:
                continue  # not ours to drop (another owner): dbcheck keeps naming it
        removed.append(item)
    return removed


def dbcheck_problems(connection: BaseDatabaseWrapper) -> list[Problem]:
    """dbcheck's warnings: copies removed now, or named and left while a migrate runs."""
    found = leftovers(connection)
    if not found:
        return []
    try:
        with database_lock(connection.settings_dict, purpose="dbcheck", wait=0):
            removed = remove_leftovers(connection)
    except OSError as exc:
        # no lock file can be made beside the database: whether a migrate runs is unknown
        return [Problem("rehearsal", item.name, f"scratch copy kept: the migrate lock cannot be taken ({exc.strerror})",
                        blocking=False) for item in found]
    except DatabaseBusy as exc:
        who = str(exc).split(" holds the database", 1)[0]  # "another migrate (pid …, started at …)"
        return [Problem("rehearsal", item.name, f"scratch copy kept: {who} holds the database and may be rehearsing "
                        "on it; the next dbcheck or migrate after it removes it if it is left", blocking=False)
                for item in found]
    gone = {item.name for item in removed}
    return [Problem("rehearsal", item.name, f"removed the {item.describe()}", blocking=False) for item in removed] + [
        Problem("rehearsal", item.name, f"the {item.describe()} could not be removed: remove it by hand",
                blocking=False) for item in found if item.name not in gone]
