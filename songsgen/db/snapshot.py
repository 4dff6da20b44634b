"""The snapshot the safe `migrate` takes before it changes anything, and puts back on failure.

A deliberately small interface, so the backup machinery (songsgen/db/backup.py, the backup issue) can
take its place later without touching the migrate path:

- `take_snapshot(connection, directory) -> Path`: a consistent copy of the live database.
- `restore_snapshot(connection, path)`: put that copy back, atomically for every other connection.

SQLite only for now. A plain file copy of a live WAL database is not consistent, so both directions use
SQLite's online backup API (`pages=-1`: one step, one read transaction on the source). Restoring copies
*into* the live database through the same API, so a process holding the database open sees the old or the
new database as one transaction, never a half-written file.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from django.db.backends.base.base import BaseDatabaseWrapper

SNAPSHOT_PREFIX = "pre-migrate-"


class SnapshotError(Exception):
    """A snapshot could not be taken, checked or restored."""


class SnapshotUnsupported(SnapshotError):
    """This database vendor has no snapshot support yet (PostgreSQL: pg_dump, a later issue)."""


def _sqlite_path(connection: BaseDatabaseWrapper) -> Path:
    if connection.vendor != "sqlite":
        raise SnapshotUnsupported(
            f"no snapshot support for {connection.vendor} yet (pg_dump/pg_restore arrive with the PostgreSQL issue)"
        )
    return Path(connection.settings_dict["NAME"]).resolve()


def _check(db: sqlite3.Connection, pragma: str) -> None:
    rows = [row[0] for row in db.execute(f"PRAGMA {pragma}").fetchall()]
    if rows != ["ok"]:
        raise SnapshotError(f"{pragma} failed: {'; '.join(map(str, rows[:5]))}")


def snapshot_files(directory: Path, connection: BaseDatabaseWrapper) -> list[Path]:
    """Finished snapshots of this database in `directory`, oldest first."""
    stem = _sqlite_path(connection).stem
    return sorted(directory.glob(f"{SNAPSHOT_PREFIX}{stem}-*.sqlite3"))


def take_snapshot(connection: BaseDatabaseWrapper, directory: Path) -> Path:
    """Copy the live database into `directory` (owner-only, renamed when complete); return its path."""
    live = _sqlite_path(connection)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = directory / f"{SNAPSHOT_PREFIX}{live.stem}-{stamp}.sqlite3"
    partial = final.with_name(final.name + ".partial")
    # Created 0600 before SQLite opens it, so the copy is never readable by others, even for a moment.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        source = sqlite3.connect(live, timeout=30)
        target = sqlite3.connect(partial)
        try:
            source.backup(target, pages=-1)
            _check(target, "quick_check")
        finally:
            target.close()
            source.close()
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final


def restore_snapshot(connection: BaseDatabaseWrapper, path: Path) -> None:
    """Put the snapshot at `path` back as the live database, atomically; check it afterwards."""
    live = _sqlite_path(connection)
    if not path.is_file():
        raise SnapshotError(f"snapshot {path} does not exist")
    # Django's connection may sit in a failed transaction; the copy needs the write lock.
    connection.close()
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        _check(source, "quick_check")
        target = sqlite3.connect(live, timeout=60)
        try:
            source.backup(target, pages=-1)
            _check(target, "integrity_check")
        finally:
            target.close()
    finally:
        source.close()


def prune_snapshots(connection: BaseDatabaseWrapper, directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` snapshots of this database; return what was deleted."""
    files = snapshot_files(directory, connection)
    doomed = files[:-keep] if keep > 0 else files
    for old in doomed:
        old.unlink(missing_ok=True)
    return doomed
