"""`manage.py dbrestore`: django-dbbackup's command; SQLite restored never over the live file."""

from __future__ import annotations

import argparse
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from dbbackup.db.exceptions import ConnectorError
from dbbackup.management.commands import dbrestore
from dbbackup.storage import get_storage
from django.core.exceptions import SuspiciousFileOperation
from django.core.management.base import CommandError
from django.db import connections

from songsgen.boundary import ExitCode
from songsgen.cli import non_negative_float
from songsgen.db import history
from songsgen.db.backup import (
    READABLE_FORMATS,
    backup_created,
    database_label,
    describe,
    latest_backup,
    pitr,
    replica,
    safetycopies,
    sqlite_path,
)
from songsgen.db.dblock import database_lock
from songsgen.db.exceptions import BackupError, DatabaseBusy, ReplicaError, RestoreUndone, RestoreUnverified
from songsgen.db.migrate.snapshot import snapshot_files

# The moment in a pre-migrate snapshot's name (pre-migrate-songs-20261207T233004973212Z.sqlite3).
SNAPSHOT_STAMP = re.compile(r"-(\d{8}T\d{6})\d*Z\.")


class _NoServerName(logging.Filter):
    """django-dbbackup names the server a backup was filtered by even when none was: "server 'None'"."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Restoring backup for database") and isinstance(record.args, tuple) \
                and len(record.args) == 2 and record.args[1] is None:
            record.msg, record.args = "Restoring backup for database '%s'", record.args[:1]
        return True


class Command(dbrestore.Command):
    filename: str | None  # set by django-dbbackup's handle() from -i / -I
    path: str | None
    help = "Restore a backup (SQLite: checked first, then copied in as one transaction). See docs/backups.md."

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument("--lock-wait", type=non_negative_float, default=0.0, metavar="SECONDS",
                            help="Wait this long for a running migrate or transfer to finish (default 0: refuse).")
        parser.add_argument("--discard-safety-copies", action="store_true",
                            help="Restore nothing: remove the safety copies (<db>.pre-restore-*) that restores "
                                 "which did not finish left beside a SQLite database.")
        parser.add_argument("--from-replica", action="store_true",
                            help="Restore from the replica `manage.py replicate` keeps (SONGSGEN_REPLICA_URL), "
                                 "through the same checks as a backup.")
        # Checked in handle(): a bad time is one line, not argparse's usage.
        parser.add_argument("--to-time", metavar="TIME",
                            help="With --from-replica: the newest state before TIME, e.g. 2026-11-30T14:02:00Z.")
        parser.add_argument("--list-restore-points", action="store_true",
                            help="Restore nothing: list the moments the replica can restore.")

    def _set_logger_level(self) -> None:
        super()._set_logger_level()
        # Its messages go to the handler set up here, not again through the root logger's console.
        self.logger.propagate = False
        if not any(isinstance(f, _NoServerName) for f in self.logger.filters):
            self.logger.addFilter(_NoServerName())

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options.get("database") or "default"
        if alias not in connections:
            raise CommandError(f"Database {alias} does not exist.")
        self._sqlite = connections[alias].vendor == "sqlite"
        self._chosen: tuple[str, IO[bytes]] | None = None
        if options["to_time"]:
            try:
                options["to_time"] = pitr.moment(options["to_time"])
            except argparse.ArgumentTypeError as exc:
                raise CommandError(f"--to-time {exc}.", returncode=ExitCode.REFUSED) from None
        if options["discard_safety_copies"]:
            self._discard_safety_copies(connections[alias].settings_dict, options)
            return
        if options["from_replica"] or options["to_time"] or options["list_restore_points"]:
            self._from_replica(connections[alias].settings_dict, options)
            return
        if self._sqlite and options.get("uncompress"):
            raise CommandError(f"Drop -z: the backup's format ({READABLE_FORMATS}) is detected.")
        # Before the lock, whose file would be the first thing a refused restore wrote.
        self._find_backup(alias, options)
        try:
            # The migrate lock: a restore under a running migrate (or the reverse)
            # would undo one of them.
            with database_lock(connections[alias].settings_dict, purpose="dbrestore", wait=options["lock_wait"]):
                super().handle(*args, **options)
        except DatabaseBusy as exc:
            raise CommandError(f"Restore refused: {exc}") from exc
        except (RestoreUndone, RestoreUnverified) as exc:
            raise CommandError(f"Restore failed: {exc}.") from exc
        except BackupError as exc:
            raise CommandError(f"Restore refused: {exc}. The live database was not changed.") from exc
        except ConnectorError as exc:  # pg_restore failed
            raise CommandError(f"Restore failed: {exc}") from exc

    def _discard_safety_copies(self, settings_dict: dict[str, Any], options: dict[str, Any]) -> None:
        if not self._sqlite:
            raise CommandError("Nothing to discard: only SQLite restores keep a safety copy.")
        live = sqlite_path(settings_dict)
        if not live.parent.is_dir():  # a fresh data folder: nothing to discard, and nothing to create for it
            if options["verbosity"] >= 1:
                self.stdout.write(f"No safety copies beside {live}.")
            return
        # Under the lock: a restore running now is still using its own copy.
        try:
            with database_lock(settings_dict, purpose="dbrestore --discard-safety-copies", wait=options["lock_wait"]):
                found = safetycopies.leftovers(live)
                for item in found:
                    item.path.unlink(missing_ok=True)
                    if options["verbosity"] >= 1:
                        self.stdout.write(f"Removed {item}.")
        except DatabaseBusy as exc:
            raise CommandError(f"Refused: {exc}") from exc
        if not found and options["verbosity"] >= 1:
            self.stdout.write(f"No safety copies beside {live}.")

    def _from_replica(self, settings_dict: dict[str, Any], options: dict[str, Any]) -> None:
        if options["to_time"] and not options["from_replica"]:
            raise CommandError("--to-time goes with --from-replica.")
        self.verbosity, self.quiet = int(options["verbosity"]), bool(options.get("quiet"))
        self._set_logger_level()
        try:
            # SQLite only: refused before any lock or connection
            rep = replica.replication(settings_dict)
            if options["list_restore_points"]:
                for line in pitr.restore_points(rep).describe():
                    self.stdout.write(line)
                return
            self.database_name, self._to_time = options.get("database") or "default", options["to_time"]
            confirm = self._ask_confirmation if options.get("interactive") else (lambda: None)
            if options["to_time"] is None and pitr.restore_points(rep).latest is None:  # refused before the lock
                raise ReplicaError(f"the replica {rep.shown_url} holds nothing to restore yet (is `manage.py "
                                   "replicate` running?)")
            with database_lock(settings_dict, purpose="dbrestore", wait=options["lock_wait"]):
                result = pitr.restore_from_replica(settings_dict, options["to_time"], log=self.logger.info,
                                                   confirm=confirm)
        except DatabaseBusy as exc:
            raise CommandError(f"Restore refused: {exc}") from exc
        except (RestoreUndone, RestoreUnverified) as exc:
            raise CommandError(f"Restore failed: {exc}.") from exc
        except (BackupError, ReplicaError) as exc:
            raise CommandError(f"Restore refused: {exc}. The live database was not changed.") from exc
        self._report(result, result.pending)

    def _find_backup(self, alias: str, options: dict[str, Any]) -> None:
        """Refuse a missing backup before anything is written; SQLite: choose the newest backup."""
        self.storage, self.database_name = get_storage(), alias
        self.filename, self.path = options.get("input_filename"), options.get("input_path")
        self._check_input()
        if not self._sqlite or self.path or self.filename:
            return
        label = database_label(connections[alias].settings_dict)
        try:
            self.filename = latest_backup(self.storage.storage, label, encrypted=bool(options.get("decrypt"))).name
        except BackupError as exc:
            raise CommandError(f"{exc}{self._snapshots_note(alias)}") from exc
        options["input_filename"] = self.filename

    def _snapshots_note(self, alias: str) -> str:
        """The pre-migrate snapshots in the backup folder, which -i restores as well."""
        try:
            found = snapshot_files(Path(getattr(self.storage.storage, "location", "")), connections[alias])
        except Exception:  # a note must never hide the refusal it adds to
            return ""
        if not found:
            return ""
        return (f" The folder holds {len(found)} snapshot(s) that `migrate` took before it changed the schema, newest "
                f"{found[-1].name}: restore one with `manage.py dbrestore -i {found[-1].name}`.")

    def _get_backup_file(self, database: str | None = None, servername: str | None = None) -> Any:
        self._check_input()
        chosen = super()._get_backup_file(database=database, servername=servername)
        self._chosen = chosen
        return chosen

    def _ask_confirmation(self) -> None:
        """A destructive question: what is replaced, by what; only "y" or "yes" goes on."""
        live = describe.live_database(self.database_name or "default")
        connections[self.database_name or "default"].close()
        self.stdout.write(f"This replaces {live}")
        self.stdout.write(f"with {self._source()}.")
        try:
            answer = input("Replace the live database? [y/N] ").strip().lower()
        except EOFError:  # no terminal: take it as no
            answer = ""
        if answer not in ("y", "yes"):
            raise CommandError("Restore cancelled: the live database was not changed.")

    def _source(self) -> str:
        """The backup a restore would copy in: its name, when it was taken, its size."""
        if self._chosen is None:
            when = self._to_time
            return f"the replica's state as of {describe.time_text(when)}" if when else "the replica's newest state"
        name, stream = self._chosen
        size = stream.seek(0, 2)
        stream.seek(0)
        created = backup_created(Path(name).name) or _snapshot_time(Path(name).name)
        if created is None and self.path:
            created = datetime.fromtimestamp(Path(self.path).stat().st_mtime, UTC)
        return f"the backup {Path(name).name} (taken {describe.time_text(created)}, {describe.size_text(size)})"

    def _check_input(self) -> None:
        """A named backup must be a file in the backup folder, a path an existing file: one line."""
        if self.path and not Path(self.path).is_file():
            raise CommandError(f"Restore refused: no backup file at {self.path} (-I takes the path of a backup file).")
        if not self.filename:
            return
        where = getattr(self.storage.storage, "location", "the backup storage")
        try:
            found = self.storage.storage.exists(self.filename)
        except SuspiciousFileOperation as exc:
            raise CommandError(
                f"Restore refused: {self.filename} is outside the backup folder {where}. -i takes the name of a "
                "backup in it (manage.py listbackups lists them); give a file elsewhere with -I PATH."
            ) from exc
        if not found:
            raise CommandError(f"Restore refused: no backup named {self.filename} in {where} "
                               "(manage.py listbackups lists them; -I PATH takes a file elsewhere).")

    def _check_metadata(self, filename: str) -> dict[str, Any] | None:
        metadata = super()._check_metadata(filename)
        if metadata and self._sqlite:
            # Always our connector: the one a metadata file names may write over the live file.
            metadata.pop("connector", None)
        return metadata

    def _restore_backup(self) -> None:
        super()._restore_backup()
        self._report(getattr(self.connector, "result", None), getattr(self.connector, "pending", None))

    def _report(self, result: Any, pending: list[str] | None) -> None:
        if result is not None:
            tables = ", ".join(f"{t} {n:,}" for t, n in result.tables.items() if not t.startswith("django_"))
            self.stdout.write(f"Restored {result.database} in {result.seconds:.1f} s, integrity ok; rows: {tables}.")
            self.stdout.write(f"Writes waited at most {result.lock_seconds:.2f} s (the copy's write lock).")
            for note in result.notes:
                self.stdout.write(f"Note: {note}.")
        if pending:
            self.stdout.write(f"Note: {history.pending_note(pending)}.")


def _snapshot_time(name: str) -> datetime | None:
    """The moment a pre-migrate snapshot's name records, or None."""
    match = SNAPSHOT_STAMP.search(name)
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC) if match else None
