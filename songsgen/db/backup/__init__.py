"""Consistent SQLite backups and restores that never write over a live file, for django-dbbackup.

The public API: commands, settings, the migrate's snapshot and rehearsal (the one product that uses
another) and the tests import from here, never a module of the package. One concern per module:

- `files`: a backup linked into place when complete (temporary names and removal: songsgen.db.atomicfile);
- `storage`: the backup storage, filenames with the database's name and the UTC time, retention;
- `codec`: the backup format (zstd), compressing and unpacking: the one place for compression;
- `live`: the live SQLite file held still, copied as of one instant, copied *into*; all OS-level I/O;
- `verify`: is a file a sound songsgen database, and `backupcheck`'s report;
- `restore`: the safe restore; `safetycopies`: the safety copies it keeps, and those killed restores left;
- `connectors`: the two django-dbbackup connectors (SQLite, pg_dump); `pgdump`: PostgreSQL archives;
- `replica`, `litestream`, `pitr`: continuous replication and restores from the replica;
- `maintain`: `dbmaintain`; `checks`: backup's dbcheck check.
- `describe`: what a restore would replace and with what (its confirmation).
"""

from songsgen.db.atomicfile import (
    TEMP_PREFIX,
    private_dir,
    remove_file,
    remove_stale_temp_files,
    replaced_when_complete,
    temp_path,
)
from songsgen.db.backup import checks, describe, litestream, pgdump, pitr, replica, safetycopies
from songsgen.db.backup.codec import FORMAT as BACKUP_FORMAT
from songsgen.db.backup.codec import READS as READABLE_FORMATS
from songsgen.db.backup.codec import compress, unpack
from songsgen.db.backup.connectors import PostgresDumpConnector, SqliteBackupConnector
from songsgen.db.backup.files import atomic_write
from songsgen.db.backup.live import (
    FrozenFile,
    copy_into_live,
    frozen_file,
    safety_copy,
    set_wal,
    snapshot,
    sqlite_path,
)
from songsgen.db.backup.maintain import maintain
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
    "checks", "describe", "litestream", "maintain", "pgdump", "pitr", "replica",
    "atomic_write", "AtomicFileSystemStorage", "backup_created", "backup_filename", "BACKUP_FORMAT",
    "BackupReport", "check_backup", "check_errors", "compress", "copy_into_live",
    "database_label", "frozen_file", "FrozenFile", "latest_backup", "list_backups", "page_size",
    "PostgresDumpConnector", "private_dir", "prune_backups", "READABLE_FORMATS", "remove_file",
    "remove_stale_temp_files", "replaced_when_complete", "restore_sqlite", "RestoreResult", "RestoreSteps",
    "row_counts", "safety_copy", "safetycopies", "set_wal", "snapshot",
    "songsgen_errors", "sqlite_path", "SqliteBackupConnector", "StoredBackup", "temp_path", "TEMP_PREFIX",
    "unpack",
]
