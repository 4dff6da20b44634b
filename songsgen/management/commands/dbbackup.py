"""`manage.py dbbackup`: django-dbbackup's command, with errors that reach the user, our retention.

Quiet on success (cron mails any output); a failure is a CommandError and a non-zero exit.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import IO, Any

from dbbackup.db.exceptions import ConnectorError
from dbbackup.management.commands import dbbackup
from dbbackup.storage import StorageError
from django.conf import settings
from django.core.management.base import CommandError
from django.db import connections

from songsgen.cli import quiet_level
from songsgen.db.backup import BACKUP_FORMAT, atomic_write, database_label, prune_backups
from songsgen.db.exceptions import BackupError


class Command(dbbackup.Command):
    help = (f"Back up the database into the backup folder (SQLite: a consistent snapshot, {BACKUP_FORMAT}). "
            "See docs/backups.md.")

    def _set_logger_level(self) -> None:
        super()._set_logger_level()
        # Its messages go to the handler set up here, not again through the root logger's console.
        self.logger.propagate = False
        # silent on success at the default verbosity, as cron wants; -v2 for the steps
        if not self.quiet:
            level = quiet_level(self.verbosity)
            self.logger.setLevel(level)
            for handler in self.logger.handlers:
                handler.setLevel(level)

    def handle(self, **options: Any) -> None:
        self._written: list[str] = []
        if options.get("compress") and self._sqlite_selected(options):
            raise CommandError(f"Drop -z: SQLite backups are {BACKUP_FORMAT}-compressed already.")
        try:
            # django-dbbackup's handle without its error-mail decorator, which can hide the error.
            dbbackup.Command.handle.__wrapped__(self, **options)
        except (BackupError, ConnectorError, StorageError, OSError, sqlite3.Error) as exc:
            raise CommandError(f"Backup failed: {exc}") from exc
        finally:
            for conn in connections.all(initialized_only=True):
                conn.close()

    def _sqlite_selected(self, options: dict[str, Any]) -> bool:
        keys = [k.strip() for k in (options.get("database") or "").split(",") if k.strip()] or list(
            settings.DATABASES
        )
        return any(connections[key].vendor == "sqlite" for key in keys)

    def write_to_storage(self, file: IO[bytes], path: str) -> None:
        super().write_to_storage(file, path)
        self._written.append(path)
        if not path.endswith(".metadata") and self.verbosity >= 2:
            self.stdout.write(f"Backup written: {Path(self.storage.storage.path(path))}")

    def write_local_file(self, outputfile: IO[bytes], path: str) -> None:
        self.logger.info("Writing file to %s", path)
        atomic_write(outputfile, Path(path))
        self._written.append(path)

    def _cleanup_old_backups(self, database: str | None = None, servername: str | None = None) -> None:
        label = database_label(connections[database or "default"].settings_dict)
        deleted = prune_backups(self.storage.storage, label, keep=int(settings.BACKUP_KEEP), protect=self._written)
        for name in deleted:
            self.logger.info("Deleted old backup %s", name)
