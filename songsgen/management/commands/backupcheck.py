"""`manage.py backupcheck`: prove that a backup (or the replica) restores, for monitoring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dbbackup import utils as dbbackup_utils
from dbbackup.storage import get_storage
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from songsgen.cli import positive_hours
from songsgen.db.backup import backup_created, check_backup, database_label, latest_backup, pitr
from songsgen.db.exceptions import BackupError, ReplicaError
from songsgen.db.problems import Problem, summary


class Command(BaseCommand):
    help = "Restore a backup into a temporary file and check it (SQLite). See docs/backups.md."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-d", "--database", default="default", help="Database alias (default: default).")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("-i", "--input-filename", help="A backup's name in the backup folder (default: newest).")
        source.add_argument("-I", "--input-path", help="A backup file anywhere on disk.")
        source.add_argument("--replica", action="store_true",
                            help="Check the replica `manage.py replicate` keeps: its newest state, restored.")
        parser.add_argument("--max-age", type=positive_hours, metavar="HOURS",
                            help="Fail when the backup is older than this many hours.")
        parser.add_argument("--decrypt", action="store_true", help="The backup is GPG-encrypted (.gpg).")
        parser.add_argument("--passphrase", help="Passphrase of the GPG key, if it has one.")
        parser.add_argument("--json", dest="as_json", action="store_true", help="Print the report as JSON.")

    def handle(self, *, database: str, input_filename: str | None, input_path: str | None, replica: bool,
               max_age: float | None, decrypt: bool, passphrase: str | None, as_json: bool, **options: Any) -> None:
        if database not in connections:
            raise CommandError(f"Database {database} does not exist.")
        conn = connections[database]
        if conn.vendor != "sqlite":
            raise CommandError(
                f"backupcheck restores SQLite backups; {database!r} is {conn.vendor}. For a pg_dump backup, "
                "`pg_restore --list FILE` reads its table of contents (docs/backups.md)."
            )
        if replica:
            try:
                report = pitr.check_replica(conn.settings_dict)
            except (ReplicaError, BackupError) as exc:
                raise CommandError(f"Replica check failed: {exc}.") from exc
            self._conclude(report, max_age, as_json, options["verbosity"], "Replica")
            return
        storage = get_storage()
        if input_path:
            path = Path(input_path)
            if not path.is_file():
                raise CommandError(f"No backup file at {path}.")
            name, stream, size = path.name, open(path, "rb"), path.stat().st_size
        else:
            try:
                name = input_filename or latest_backup(
                    storage.storage, database_label(conn.settings_dict), encrypted=decrypt or None
                ).name
            except BackupError as exc:
                raise CommandError(str(exc)) from exc
            try:
                found = storage.storage.exists(name)
            except SuspiciousFileOperation as exc:
                raise CommandError(f"{name} is outside the backup folder {storage.storage.location}: -i takes the "
                                   "name of a backup in it; give a file elsewhere with -I PATH.") from exc
            if not found:
                raise CommandError(f"No backup named {name!r} in {storage.storage.location}.")
            stream, size = storage.read_file(name), storage.storage.size(name)
        created = backup_created(name)
        try:
            if decrypt or name.endswith(".gpg"):
                try:
                    plain, _ = dbbackup_utils.unencrypt_file(stream, name, passphrase)
                except dbbackup_utils.DecryptionError as exc:
                    raise CommandError(f"{name}: cannot decrypt ({exc}).") from exc
                stream.close()
                stream = plain
            report = check_backup(stream, name, size, Path(settings.BACKUP_DIR), created)
        finally:
            stream.close()
        self._conclude(report, max_age, as_json, options["verbosity"], "Backup")

    def _conclude(self, report: Any, max_age: float | None, as_json: bool, verbosity: int, what: str) -> None:
        too_old = max_age is not None and (report.age_seconds is None or report.age_seconds > max_age * 3600)
        if too_old:
            report.errors.append(Problem("age", report.name, f"older than {max_age:g} hours"
                                         if report.age_seconds is not None
                                         else "its age is unknown (no UTC time in its name)"))
            report.ok = False
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        elif verbosity >= 2 or not report.ok:  # silent on success for cron; -v2 shows the report
            self._print(report)
        if not report.ok:
            raise CommandError(f"{what} {report.name} is NOT usable: {summary(report.errors, limit=None)}")

    def _print(self, report: Any) -> None:
        age = f"{report.age_seconds / 3600:.1f} h" if report.age_seconds is not None else "unknown"
        self.stdout.write(f"Backup:   {report.name}")
        self.stdout.write(f"Size:     {report.size / 2**20:.1f} MiB stored, {report.database_size / 2**20:.1f} MiB "
                          f"unpacked ({report.format or 'unknown format'})")
        self.stdout.write(f"Age:      {age}")
        if report.ok:
            self.stdout.write("Check:    ok (integrity_check, a songsgen database)")
            for table, rows in report.tables.items():
                self.stdout.write(f"  {table:<40} {rows:>12,}")
