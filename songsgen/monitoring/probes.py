"""The facts /health judges and /metrics exports, read from files and the database when asked.

Cheap at any size: listings, stats, small files, catalogue figures; no table is counted.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import storages
from django.db import DatabaseError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.module_loading import import_string

from songsgen.db import dbcheck
from songsgen.db.backup import StoredBackup, database_label, list_backups
from songsgen.db.dblock import database_lock
from songsgen.db.exceptions import DatabaseBusy
from songsgen.db.migrate import lastrun, marker, snapshot


def _now() -> datetime:
    return datetime.now(UTC)


# --- backups
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backups:
    """This database's backups in the backup storage."""

    count: int
    newest: StoredBackup | None
    newest_size: int | None
    location: str
    now: datetime

    @property
    def age_seconds(self) -> float | None:
        return None if self.newest is None else (self.now - self.newest.created).total_seconds()


def backups(connection: BaseDatabaseWrapper) -> Backups:
    """The backups `dbbackup` wrote for this database (by name: its own name and the UTC time).

    The storage is settings.STORAGES["dbbackup"], the one django-dbbackup writes to."""
    storage = storages["dbbackup"]
    found = list_backups(storage.listdir("")[1], database_label(connection.settings_dict))
    newest = found[0] if found else None
    size = storage.size(newest.name) if newest else None
    return Backups(len(found), newest, size, str(getattr(storage, "location", "the backup storage")), _now())


# --- the safe migrate
# -------------------------------------------------------------------------------
IDLE, RUNNING, INTERRUPTED = "idle", "running", "interrupted"


@dataclass(frozen=True)
class MigrateState:
    """Whether a migrate is applying migrations now, or died while it did (its marker is left)."""

    state: str  # IDLE | RUNNING | INTERRUPTED
    marker: dict[str, Any] | None = None

    def describe(self) -> str:
        data = self.marker or {}
        return f"a migrate (pid {data.get('pid', '?')}, started {data.get('started', 'unknown')})"


def migrate_state(connection: BaseDatabaseWrapper) -> MigrateState:
    """A marker under a held lock is a running migrate; one we can lock over, a dead one's."""
    if marker.read(connection) is None:
        return MigrateState(IDLE)
    try:
        # Held for a moment only, and only while a marker exists; a migrate starting in that moment
        # is told who holds the lock, like any other.
        with database_lock(connection.settings_dict, purpose="health-check", wait=0):
            left = marker.read(connection)  # the migrate may have finished meanwhile
    except DatabaseBusy:
        return MigrateState(RUNNING, marker.read(connection))
    return MigrateState(INTERRUPTED, left) if left is not None else MigrateState(IDLE)


def last_migrate(connection: BaseDatabaseWrapper) -> dict[str, Any] | None:
    """The last guarded migrate's recorded outcome (`songsgen.db.migrate.lastrun`), or None."""
    return lastrun.read(connection)


# --- room and sizes
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Room:
    """Free space where the next backup goes, against what it needs (the safe migrate's rule)."""

    folder: Path
    free: int
    needed: int

    @property
    def enough(self) -> bool:
        return self.free >= self.needed


def _existing(folder: Path) -> Path:
    """The folder, or its nearest existing parent (the backup folder comes with a first backup)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def backup_room(connection: BaseDatabaseWrapper) -> Room:
    """Room in the backup folder for one more backup: database size x factor + margin."""
    folder = Path(settings.BACKUP_DIR)
    return Room(folder, shutil.disk_usage(_existing(folder)).free, snapshot.room_needed(connection))


def data_free_bytes() -> int:
    """Free space in the data folder (SQLite's database and WAL grow there)."""
    return shutil.disk_usage(_existing(Path(settings.DATA_DIR))).free


def database_sizes(connection: BaseDatabaseWrapper) -> dict[str, int]:
    """Database and WAL bytes; on PostgreSQL the WAL only where the role may (pg_monitor)."""
    if connection.vendor != "postgresql":
        figures = dbcheck.sizes(connection)  # file sizes and PRAGMAs: no transaction (no write lock)
    else:
        try:
            with transaction.atomic(using=connection.alias):  # a refusal must not spoil the session
                figures = dbcheck.sizes(connection)
        except DatabaseError:
            # pg_ls_waldir() needs pg_monitor; the database's size needs no privilege
            figures = {"database_bytes": snapshot.database_size(connection)}
    return {key: int(figures[key]) for key in ("database_bytes", "wal_bytes") if key in figures}


# --- replication
# ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Replication:
    """Replication's position; `configured` False unless SONGSGEN_REPLICA_URL is set or it runs."""

    configured: bool
    lag_seconds: float | None = None
    last_sync: datetime | None = None
    problem: str = ""  # why the position is unknown, when it is


def replication_configured() -> bool:
    """Whether replication is asked for (SONGSGEN_REPLICA_URL, or another reader named)."""
    from songsgen.db.backup import replica

    return replica.asked_for() or bool(getattr(settings, "REPLICATION_STATUS", ""))


def replication(connection: BaseDatabaseWrapper) -> Replication:
    """Where replication stands: Litestream's, read from `manage.py replicate`
    (`songsgen.db.backup.replica`), unless settings.REPLICATION_STATUS names another reader (a
    callable(connection) returning Replication)."""
    reader = getattr(settings, "REPLICATION_STATUS", "")
    if reader:
        status: Replication = import_string(reader)(connection)
        return status
    if connection.vendor != "sqlite":
        return Replication(configured=False)
    from songsgen.db.backup import replica

    found = replica.replication_status(connection.settings_dict)
    if not (replica.asked_for() or found.running):
        return Replication(configured=False)
    if not found.running:
        return Replication(configured=True, problem="SONGSGEN_REPLICA_URL is set but `manage.py replicate` is not "
                                                    "running (docs/backups.md)")
    return Replication(configured=True, lag_seconds=found.lag_seconds, last_sync=found.last_sync,
                       problem="" if found.lag_seconds is not None else "Litestream has not confirmed a sync yet")
