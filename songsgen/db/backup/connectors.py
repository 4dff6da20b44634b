"""The two django-dbbackup connectors: SQLite through our own code, PostgreSQL through pg_dump."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from dbbackup.db.base import BaseDBConnector
from dbbackup.db.postgresql import PgDumpBinaryConnector
from django.conf import settings

from songsgen.db import history
from songsgen.db.atomicfile import TEMP_PREFIX, private_dir, remove_file, remove_stale_temp_files, temp_path
from songsgen.db.backup import codec, live, pgdump, verify
from songsgen.db.backup.restore import RestoreResult, restore_sqlite
from songsgen.db.backup.storage import backup_filename, database_label
from songsgen.db.exceptions import BackupError, PgDumpError
from songsgen.db.problems import Problem, summary

# django-dbbackup's command logger, bound to --verbosity
logger = logging.getLogger("dbbackup.command")


class _NamingMixin:
    """Filenames with the database's own name and the UTC time, never an existing file's name."""

    extension: str
    connection: Any

    def generate_filename(self, server_name: str | None = None) -> str:
        from dbbackup.storage import get_storage

        listed = set(get_storage().list_directory())
        label = database_label(self.connection.settings_dict)
        while True:
            name = backup_filename(self.extension, label, server_name)
            if not any(n.startswith(name) for n in listed):
                return name
            time.sleep(0.2)  # two backups within one second: wait for the next second's name
            listed = set(get_storage().list_directory())


class SqliteBackupConnector(_NamingMixin, BaseDBConnector):
    """A consistent online snapshot, compressed, never held in memory; our safe restore."""

    extension = codec.EXTENSION
    # The backup-API copy taken when the file cannot be held still; a test counts them through it.
    api_copy: Callable[..., None] = staticmethod(live.snapshot)

    @property
    def work_dir(self) -> Path:
        return Path(settings.BACKUP_DIR)

    def create_dump(self) -> IO[bytes]:
        source = live.sqlite_path(self.connection.settings_dict)
        if not source.exists():
            raise BackupError(f"There is no database at {source} to back up.")
        # No connection of this process may close a descriptor of the file while it
        # is read (frozen_file).
        self.connection.close()
        timeout = float(settings.SQLITE_BUSY_TIMEOUT_MS) / 1000
        folder = self.work_dir
        remove_stale_temp_files(folder)
        private_dir(folder)
        # Compressed straight into a temporary file in the backup folder, which the
        # storage then names without copying; it is unlinked when closed, and after a
        # SIGKILL by the next backup.
        packed = tempfile.NamedTemporaryFile(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".zst")
        try:
            errors = self._pack(source, packed, timeout=timeout)
            if errors:
                raise BackupError(
                    f"The snapshot of {source} fails PRAGMA quick_check ({summary(errors)}): the live "
                    "database itself may be damaged. No backup was written."
                )
        except BaseException:
            packed.close()
            raise
        packed.flush()
        packed.seek(0)
        return packed

    def _pack(self, source: Path, packed: IO[bytes], *, timeout: float) -> list[Problem]:
        """Compress a consistent snapshot of `source` into `packed`; what quick_check found.

        Straight from the database file while frozen_file() holds it still, quick_check of that same
        state running beside the compression; else (a reader pins the WAL) from a backup-API copy.
        """
        with live.frozen_file(source, timeout=timeout) as frozen:
            if frozen is not None:
                with live.beside("threads:pack", lambda: verify.check_connection(frozen.reader, quick=True)) as checked:
                    codec.compress(_pieces(frozen.fd, frozen.size), frozen.size, packed)
                    return checked.result()
        copy = temp_path(self.work_dir, ".sqlite3")
        try:
            self.api_copy(source, copy, timeout=timeout)
            with open(copy, "rb") as file, live.beside(
                "threads:pack", lambda: verify.check_errors(copy, quick=True)
            ) as checked:
                size = copy.stat().st_size
                codec.compress(_pieces(file.fileno(), size), size, packed)
                return checked.result()
        finally:
            remove_file(copy)

    def restore_dump(self, dump: IO[bytes]) -> RestoreResult:
        target = live.sqlite_path(self.connection.settings_dict)
        self.connection.close()
        self.result = restore_sqlite(dump, target, timeout=float(settings.SQLITE_BUSY_TIMEOUT_MS) / 1000,
                                     log=logger.info)
        self.pending = self.result.pending
        return self.result


def _pieces(fd: int, size: int) -> Iterator[memoryview]:
    """The file's bytes for the compressor, through one buffer for the whole file: flat memory."""
    return (piece for _, piece in live.read_pieces(fd, size, bytearray(codec.BUFFER)))


class PostgresDumpConnector(_NamingMixin, PgDumpBinaryConnector):
    """django-dbbackup's pg_dump (custom format) connector, with our filenames and our restore.

    The restore is checked first (a readable archive of a songsgen database), then applied as one
    transaction that also drops what the archive does not hold (`songsgen.db.backup.pgdump`): other
    sessions see the old database or the restored one, and a failure leaves the old one.
    django-dbbackup's own `pg_restore --clean` would leave tables created since the backup behind.
    """

    def _restore_dump(self, dump: IO[bytes]) -> tuple[str, str]:
        folder = Path(settings.BACKUP_DIR)
        archive = temp_path(folder, ".pgdump")
        try:
            with open(archive, "wb") as out:
                shutil.copyfileobj(dump, out, 1 << 20)
            pgdump.check_songsgen_archive(self.settings, archive)
            gap = history.history_gap(pgdump.recorded_migrations(self.settings, archive))
            if gap.ahead:
                raise BackupError(history.newer_release(gap.ahead))
            pgdump.restore(self.settings, archive)
            self.pending = gap.behind
        except PgDumpError as exc:
            raise BackupError(str(exc)) from exc
        finally:
            remove_file(archive)
        return "", ""
