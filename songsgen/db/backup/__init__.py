"""Consistent SQLite backups and restores that never write over a live file, for django-dbbackup.

The package's public API: code outside it imports from here, never from one of its modules.
"""

from songsgen.db.backup import safetycopies
from songsgen.db.backup.codec import FORMAT as BACKUP_FORMAT
from songsgen.db.backup.codec import READS as READABLE_FORMATS
from songsgen.db.backup.codec import compress, unpack
from songsgen.db.backup.connectors import PostgresDumpConnector, SqliteBackupConnector
from songsgen.db.backup.files import (
    TEMP_PREFIX,
    atomic_write,
    private_dir,
    remove_file,
    remove_stale_temp_files,
    replaced_when_complete,
    temp_path,
)
from songsgen.db.backup.live import (
    FrozenFile,
    copy_into_live,
    frozen_file,
    safety_copy,
    set_wal,
    snapshot,
    sqlite_path,
)
from songsgen.db.backup.restore import RestoreResult, RestoreSteps, restore_sqlite
from songsgen.db.backup.storage import (
    AtomicFileSystemStorage,
    StoredBackup,
    backup_created,
    backup_filename,
    database_label,
    latest_backup,
    list_backups,
    prune_backups,
)
from songsgen.db.backup.verify import (
    BackupReport,
    check_backup,
    check_errors,
    page_size,
    row_counts,
    songsgen_errors,
)

__all__ = [
    "atomic_write", "AtomicFileSystemStorage", "backup_created", "backup_filename", "BACKUP_FORMAT",
    "BackupReport", "check_backup", "check_errors", "compress", "copy_into_live",
    "database_label", "frozen_file", "FrozenFile", "latest_backup", "list_backups", "page_size",
    "PostgresDumpConnector", "private_dir", "prune_backups", "READABLE_FORMATS", "remove_file",
    "remove_stale_temp_files", "replaced_when_complete", "restore_sqlite", "RestoreResult", "RestoreSteps",
    "row_counts", "safety_copy", "safetycopies", "set_wal", "snapshot",
    "songsgen_errors", "sqlite_path", "SqliteBackupConnector", "StoredBackup", "temp_path", "TEMP_PREFIX",
    "unpack",
]
