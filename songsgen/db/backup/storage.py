"""Where backups live and what they are called: the storage, filenames with the UTC time, retention.

The filename carries the database's name, so retention works by name whatever shares the folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbbackup import settings as dbbackup_settings
from dbbackup import utils as dbbackup_utils
from django.core.files.storage import FileSystemStorage

from songsgen.db.atomicfile import TEMP_PREFIX, private_dir
from songsgen.db.backup.files import atomic_write
from songsgen.db.exceptions import BackupError


class AtomicFileSystemStorage(FileSystemStorage):
    """FileSystemStorage whose files appear only when complete: temporary name, fsync, link."""

    def _save(self, name: str, content: Any) -> str:
        while True:
            full_path = Path(self.path(name))
            private_dir(full_path.parent, self.directory_permissions_mode or 0o700)
            try:
                atomic_write(content, full_path, mode=self.file_permissions_mode or 0o600)
            except FileExistsError:
                name = self.get_available_name(name)  # the same race Django's own _save handles
                continue
            return str(name).replace("\\", "/")

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        try:
            return super().listdir(path)
        except FileNotFoundError:  # no backup yet: the folder appears with the first one
            return [], []


def database_label(settings_dict: dict[str, Any]) -> str:
    """The database's name as backup filenames carry it: the SQLite file's stem, or PG name."""
    name = str(settings_dict["NAME"])
    if settings_dict["ENGINE"].endswith("sqlite3"):
        name = Path(name).name
    return name.split(".")[0]


def utc_stamp(moment: datetime | None = None) -> str:
    """The time part of a backup's filename, always in UTC."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(dbbackup_settings.DATE_FORMAT)


def backup_filename(extension: str, label: str, servername: str | None = None, moment: datetime | None = None) -> str:
    """A backup's filename from DBBACKUP_FILENAME_TEMPLATE: the database's name, UTC time."""
    return str(dbbackup_utils.filename_generate(extension, label, servername, wildcard=utc_stamp(moment)))


@dataclass(frozen=True)
class StoredBackup:
    """A backup file in storage: its name and the UTC time its name records."""

    name: str
    created: datetime

    @property
    def encrypted(self) -> bool:
        return self.name.endswith(".gpg")


def backup_created(name: str) -> datetime | None:
    """The UTC time a backup's filename records, or None."""
    stamp = dbbackup_utils.filename_to_datestring(name)
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, dbbackup_settings.DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def list_backups(names: Iterable[str], label: str) -> list[StoredBackup]:
    """The backups of database `label` among `names`, newest first (no metadata, temporaries)."""
    found = []
    for name in names:
        if name.endswith(".metadata") or name.startswith(TEMP_PREFIX):
            continue
        stamp = dbbackup_utils.filename_to_datestring(name)
        created = backup_created(name)
        if not stamp or not created or not name.startswith(f"{label}-{stamp}"):
            continue  # another database's backup, or not a backup at all
        found.append(StoredBackup(name, created))
    return sorted(found, key=lambda b: (b.created, b.name), reverse=True)


def prune_backups(storage: Any, label: str, *, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Delete all but the newest `keep` backups of `label`, never one in `protect`; the deleted."""
    if keep < 1:
        raise BackupError(f"Retention must keep at least one backup, got {keep}: set SONGSGEN_BACKUP_KEEP >= 1.")
    backups = list_backups(storage.listdir("")[1], label)
    protected = set(protect)
    kept = [b for b in backups if b.name in protected]
    for backup in backups:
        if len(kept) >= keep:
            break
        if backup not in kept:
            kept.append(backup)
    deleted = []
    for backup in backups:
        if backup in kept:
            continue
        storage.delete(backup.name)
        if storage.exists(f"{backup.name}.metadata"):
            storage.delete(f"{backup.name}.metadata")
        deleted.append(backup.name)
    return deleted


def latest_backup(storage: Any, label: str, *, encrypted: bool | None = None) -> StoredBackup:
    """The newest backup of database `label` in `storage`."""
    backups = [b for b in list_backups(storage.listdir("")[1], label) if encrypted is None or b.encrypted == encrypted]
    if not backups:
        location = getattr(storage, "location", "the backup storage")
        raise BackupError(f"No backup of database {label!r} in {location}; make one with `manage.py dbbackup`.")
    return backups[0]
