"""The snapshot the safe `migrate` takes before it changes anything, and puts back on request.

Uncompressed, so putting it back is quick; over `songsgen.db.backup` (SQLite) and pg_dump.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db import atomicfile, backup
from songsgen.db.backup import pgdump
from songsgen.db.exceptions import BackupError, MigrateRefused, PgDumpError, SnapshotError, SnapshotUnsupported
from songsgen.db.problems import summary

SNAPSHOT_PREFIX = "pre-migrate-"


def _sqlite_path(connection: BaseDatabaseWrapper) -> Path:
    if connection.vendor != "sqlite":
        raise SnapshotUnsupported(f"no SQLite snapshot for a {connection.vendor} database")
    return backup.sqlite_path(connection.settings_dict)


def _stem_and_suffix(connection: BaseDatabaseWrapper) -> tuple[str, str]:
    if connection.vendor == "sqlite":
        return _sqlite_path(connection).stem, ".sqlite3"
    if connection.vendor == "postgresql":
        return str(connection.settings_dict["NAME"]), ".pgdump"
    raise SnapshotUnsupported(f"no snapshot support for {connection.vendor}")


def prepare_folder(directory: Path) -> Path:
    """Create the snapshot folder 0700 if missing: it holds whole copies of the database."""
    return backup.private_dir(directory)


def snapshot_files(directory: Path, connection: BaseDatabaseWrapper) -> list[Path]:
    """Finished snapshots of this database in `directory`, oldest first."""
    stem, suffix = _stem_and_suffix(connection)
    return sorted(directory.glob(f"{SNAPSHOT_PREFIX}{stem}-*{suffix}"))


def take_snapshot(connection: BaseDatabaseWrapper, directory: Path) -> Path:
    """Copy the live database into `directory` (owner-only, renamed when complete); its path."""
    stem, suffix = _stem_and_suffix(connection)
    prepare_folder(directory)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = directory / f"{SNAPSHOT_PREFIX}{stem}-{stamp}{suffix}"
    # The backup machinery's temporary name: created 0600 before anything writes it, and cleaned up
    # by the next backup if this process dies before the rename.
    if connection.vendor == "postgresql":
        try:
            with atomicfile.replaced_when_complete(final, suffix=suffix) as partial:
                pgdump.dump(connection.settings_dict, partial)
        except PgDumpError as exc:
            raise SnapshotError(str(exc)) from exc
        return final
    live = _sqlite_path(connection)
    with atomicfile.replaced_when_complete(final, suffix=".sqlite3") as partial:
        backup.snapshot(live, partial, timeout=30)
        errors = backup.check_errors(partial, quick=True)
        if errors:
            raise SnapshotError(f"the snapshot fails quick_check: {summary(errors)}")
    return final


def restore_snapshot(connection: BaseDatabaseWrapper, path: Path) -> None:
    """Put the snapshot at `path` back as the live database, atomically; check it afterwards."""
    if not path.is_file():
        raise SnapshotError(f"snapshot {path} does not exist")
    if connection.vendor == "postgresql":
        connection.close()  # its session may sit in a failed transaction or hold locks
        try:
            pgdump.restore(connection.settings_dict, path)
        except PgDumpError as exc:
            raise SnapshotError(str(exc)) from exc
        return
    live = _sqlite_path(connection)
    errors = backup.check_errors(path, quick=True)
    if errors:
        raise SnapshotError(f"the snapshot {path} fails quick_check: {summary(errors)}")
    # Django's connection may sit in a failed transaction; the copy needs the write lock.
    connection.close()
    try:
        backup.copy_into_live(path, live, timeout=60)
    except (BackupError, sqlite3.Error, OSError) as exc:
        raise SnapshotError(f"putting the snapshot {path} back failed ({exc})") from exc
    errors = backup.check_errors(live)
    if errors:
        raise SnapshotError(f"the restored database fails integrity_check: {summary(errors)}")
    backup.set_wal(live, 60)


def prune_snapshots(connection: BaseDatabaseWrapper, directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` snapshots of this database; return what was deleted."""
    files = snapshot_files(directory, connection)
    doomed = files[:-keep] if keep > 0 else files
    for old in doomed:
        old.unlink(missing_ok=True)
    return doomed


def database_size(connection: BaseDatabaseWrapper) -> int:
    """Bytes a backup of this database needs, about: file plus WAL, or pg_database_size."""
    if connection.vendor == "sqlite":
        path = Path(connection.settings_dict["NAME"])
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        return int(cursor.fetchone()[0])


def room_needed(connection: BaseDatabaseWrapper) -> int:
    """Bytes a backup of this database needs in its folder: size x factor + margin (settings)."""
    return int(database_size(connection) * float(settings.MIGRATE_BACKUP_SIZE_FACTOR)) + int(
        settings.MIGRATE_BACKUP_MARGIN_BYTES
    )


def check_writable(directory: Path) -> None:
    """Raise MigrateRefused unless a file can be made in the backup folder (created if missing)."""
    try:
        prepare_folder(directory)
        backup.temp_path(directory).unlink()
    except OSError as exc:
        raise MigrateRefused(
            f"The backup folder {directory} is not writable ({exc.strerror or exc}). Nothing was changed. Make it "
            "writable, point SONGSGEN_BACKUP_DIR at a writable folder, or run with --no-backup at your own risk."
        ) from exc


def check_room(connection: BaseDatabaseWrapper, directory: Path, *, scratch: bool = False) -> tuple[int, int]:
    """(needed, free) bytes; raise MigrateRefused when the backup folder lacks room (`scratch`:
    also for the rehearsal's scratch copy of the snapshot, which SQLite keeps beside it)."""
    check_writable(directory)
    factor = float(settings.MIGRATE_BACKUP_SIZE_FACTOR)
    part = int(database_size(connection) * factor)  # measured once for the backup and the scratch copy
    needed = part + int(settings.MIGRATE_BACKUP_MARGIN_BYTES) + (part if scratch else 0)
    free = shutil.disk_usage(directory).free
    if free < needed:
        what = "the backup and the rehearsal's scratch copy" if scratch else "the backup"
        times = f"{factor} x 2" if scratch else f"{factor}"
        raise MigrateRefused(
            f"Not enough room for {what} in {directory}: {free / 2**20:,.1f} MiB free, "
            f"{needed / 2**20:,.1f} MiB needed (database size x {times} + "
            f"{settings.MIGRATE_BACKUP_MARGIN_BYTES / 2**20:,.0f} MiB margin). Nothing was changed. Free space, "
            "point SONGSGEN_BACKUP_DIR at a bigger disk, or run with --no-backup at your own risk."
        )
    return needed, free


def take_checked(connection: BaseDatabaseWrapper, directory: Path, *, scratch: bool = False) -> Path:
    """The safe migrate's disaster-recovery copy: folder and room checked first (`scratch`: room
    for the rehearsal's copy too); a failure is a refusal (nothing changed)."""
    check_room(connection, directory, scratch=scratch)
    try:
        return take_snapshot(connection, directory)
    except (SnapshotError, OSError) as exc:
        raise MigrateRefused(
            f"The backup before migrating failed ({exc}). Nothing was changed. Fix the cause and run again, "
            "or take a backup yourself and run with --no-backup."
        ) from exc
