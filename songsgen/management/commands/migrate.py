"""`manage.py migrate`, safely: Django's migrate inside lock → plan → safety → snapshot → verify.

Safe by default however it is called; `--plain` is Django's own. Exit codes (`songsgen.boundary.ExitCode`):
docs/migrations.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.core.management.commands.migrate import Command as DjangoMigrateCommand
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration

from songsgen.boundary import ExitCode
from songsgen.cli import non_negative_float, non_negative_int
from songsgen.db import history
from songsgen.db.dblock import database_lock
from songsgen.db.exceptions import DatabaseBusy, MigrateFailed, MigrateRefused
from songsgen.db.migrate import Applier, lastrun, marker
from songsgen.db.migrate import run as safe_migrate
from songsgen.db.migrate.runstatus import RunStatus
from songsgen.db.replicas import ReplayWait

Log = Callable[[str], None]
WIDTH = 100  # columns of the report's wrapped lists


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A service manager's SIGTERM rolls back like Ctrl-C instead of dying mid-plan."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _applied(entry: dict[str, Any]) -> str:
    lock = f", lock {entry['lock_seconds']:.2f} s" if "lock_seconds" in entry else ""
    return f"{entry['migration']} ({entry['seconds']:.2f} s{lock})"


def _wrapped(text: str) -> str:
    """A long list as lines of at most WIDTH characters, the continuation indented."""
    return textwrap.fill(text, width=WIDTH, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def _applied_lines(report: safe_migrate.Report, *, detailed: bool) -> list[str]:
    """What was applied (or unapplied): each with its times from -v2; at -v1 the plan above already names them."""
    verb = "Unapplied" if report.plan and all(step.backwards for step in report.plan) else "Applied"
    if detailed:
        return [f"{verb}:"] + [f"  {_applied(entry)}" for entry in report.applied]
    names = [str(entry["migration"]) for entry in report.applied]
    slowest = max(report.applied, key=lambda entry: float(entry["seconds"]))
    slow = f"; slowest: {slowest['migration']} ({float(slowest['seconds']):.2f} s)"
    if names == [step.migration for step in report.plan]:
        return [_wrapped(f"{verb}: all {len(names)} migration(s) of the plan{slow}")]
    return [_wrapped(f"{verb}: {len(names)} migration(s): " + ", ".join(names) + slow)]


def _online(entry: dict[str, Any]) -> str:
    if "kind" in entry:  # PostgreSQL: a statement in its safe form
        return (f"Safe DDL: {entry['migration']} on {entry['table']}: {entry['original'][:80]} ran as "
                f"{len(entry['ran'])} statement(s), longest {entry['longest_step_seconds']:.3f} s")
    return (f"Online: {entry['migration']} rebuilt {entry['table']}: {entry['rows']:,} rows in {entry['chunks']} "
            f"chunk(s), longest lock {entry['longest_lock_seconds']:.3f} s "
            f"(cut-over {entry['cutover_seconds']:.3f} s), {entry['seconds']:.1f} s")


def _replica_lines(entries: list[dict[str, Any]]) -> list[str]:
    """One line per replica: its replay lag after each migration, or where it fell behind."""
    lines = []
    for alias in dict.fromkeys(entry["replica"] for entry in entries):
        parts = [f"{', '.join(e['migrations'])} {e['seconds']:.2f} s" if e["replayed"]
                 else f"{', '.join(e['migrations'])} not replayed ({e['problem']})"
                 for e in entries if e["replica"] == alias]
        lines.append(f"Replica {alias} replay lag: " + "; ".join(parts))
    return lines


class Command(DjangoMigrateCommand):
    help = DjangoMigrateCommand.help + (
        " Guarded: safety checks, a backup, verification of the live schema, and a restore on failure "
        "(docs/migrations.md)."
    )
    _typed = False  # run from the command line (run_from_argv), not call_command
    _foreign: str | None = None  # why the database is not this project's (history.foreign_database)
    _applier: Applier | None = None  # steered by the progress callback while the safe path applies

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--allow-unsafe", action="store_true",
                            help="Apply even when the safety checks find unsafe operations.")
        parser.add_argument("--check-safety", action="store_true",
                            help="Only run the safety checks on the pending migrations; exit 2 if any is unsafe.")
        parser.add_argument("--no-backup", action="store_true",
                            help="Skip the backup (a failure can then not be undone).")
        parser.add_argument("--resume-restore", action="store_true",
                            help="Unapply what a killed migrate committed (reverse operations), then stop.")
        parser.add_argument("--from-snapshot", action="store_true",
                            help="With --resume-restore: put the snapshot back instead, discarding every row "
                                 "written since it was taken.")
        parser.add_argument("--lock-wait", type=non_negative_float, default=0.0, metavar="SECONDS",
                            help="Wait this long for another migrate to finish (default 0: refuse at once).")
        parser.add_argument("--lock-retries", type=non_negative_int, default=5, metavar="N",
                            help="PostgreSQL: retry a migration that hit the lock timeout N times (default 5).")
        parser.add_argument("--rehearse", action="store_true",
                            help="Apply the plan to a scratch copy of the snapshot first and report each migration's "
                                 "time, write-lock time and rows; then ask (or with --noinput go on).")
        parser.add_argument("--rehearse-only", action="store_true",
                            help="Rehearse and report, then stop: the live database is not touched.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON on stdout.")
        parser.add_argument("--plain", action="store_true", help="Django's migrate without any guard.")
        parser.add_argument("--adopt", action="store_true",
                            help="Migrate a database with tables but no history of this project.")
        parser.add_argument("--safe", action="store_true", default=None, help=argparse.SUPPRESS)

    def run_from_argv(self, argv: list[str]) -> None:
        self._typed = True
        super().run_from_argv(argv)

    def execute(self, *args: Any, **options: Any) -> Any:
        # Look before the system checks do: their first query connects, and a new SQLite connection
        # switches the file to WAL (`songsgen.db.sqlite`). A foreign database skips them: refused.
        self._foreign = None
        if self._guarded(options) and not options.get("resume_restore") and not options.get("adopt"):
            alias = options.get("database") or DEFAULT_DB_ALIAS
            self._foreign = history.foreign_database(connections[alias])
            if self._foreign:
                options["skip_checks"] = True
        return super().execute(*args, **options)

    def _guarded(self, options: dict[str, Any]) -> bool:
        """The safe path unless opted out (`--plain`, `safe=False`, or the setting for calls
        from code), and none of Django's own read-only modes."""
        safe = options.get("safe")
        if safe is None:
            safe = self._typed or settings.MIGRATE_SAFE_BY_DEFAULT
        return bool(safe) and not any(options.get(name) for name in ("plain", "plan", "check_unapplied", "prune"))

    def migration_progress_callback(
        self, action: str, migration: Migration | None = None, fake: bool = False
    ) -> None:
        applier = self._applier
        if applier is not None:
            if action in ("apply_start", "unapply_start") and migration is not None:
                applier.start(migration, backwards=action == "unapply_start")
            elif action in ("apply_success", "unapply_success"):
                applier.finish()
        super().migration_progress_callback(action, migration, fake)

    def handle(self, *args: Any, **options: Any) -> None:
        if not self._guarded(options):
            super().handle(*args, **options)
            return

        self.verbosity = options["verbosity"]
        connection = connections[options["database"]]
        as_json = options["json"]
        report = safe_migrate.Report(database=connection.alias, vendor=connection.vendor)

        def log(text: str) -> None:
            if not as_json and options["verbosity"] >= 1:
                self.stdout.write(text)
                self.stdout.flush()  # seen at once through a pipe too (the replica wait's notice comes before a wait)

        def warn(text: str) -> None:
            self.stderr.write(text)

        try:
            if self._foreign:  # refused before the lock, which would leave its file beside it
                raise MigrateRefused(self._foreign)
            with database_lock(connection.settings_dict, purpose="migrate", wait=options["lock_wait"]), \
                    _sigterm_as_interrupt():
                if options["resume_restore"]:
                    report.status, report.backup = marker.resume(
                        connection, from_snapshot=options["from_snapshot"], log=log
                    )
                else:
                    # With --json stdout holds the report alone: what migrations print (a
                    # backfill's progress) goes to stderr. self.stdout keeps the real stdout.
                    with redirect_stdout(sys.stderr) if as_json else nullcontext():
                        report = self._run_safe(connection, options, log, warn, args, report)
        except (DatabaseBusy, MigrateRefused) as exc:
            report.status, report.error = RunStatus.REFUSED, str(exc)
            self._finish(report, as_json)
            raise CommandError(f"Refused: {exc}", returncode=ExitCode.REFUSED) from None
        except MigrateFailed as exc:
            report.status = RunStatus.RESTORED if exc.restored else RunStatus.FAILED
            report.error = report.error or str(exc)
            lastrun.record(connection, report)
            self._finish(report, as_json)
            raise CommandError(str(exc), returncode=ExitCode.FAILED if exc.restored else ExitCode.BROKEN) from None
        lastrun.record(connection, report)
        self._finish(report, as_json)

    def _run_safe(
        self, connection: BaseDatabaseWrapper, options: dict[str, Any], log: Log, warn: Log, args: tuple[Any, ...],
        report: safe_migrate.Report,
    ) -> safe_migrate.Report:
        connection.prepare_database()
        executor = MigrationExecutor(connection)
        executor.loader.check_consistent_history(connection)
        conflicts = executor.loader.detect_conflicts()
        if conflicts:
            names = "; ".join(f"{', '.join(n)} in {app}" for app, n in conflicts.items())
            raise MigrateRefused(
                f"Conflicting migrations ({names}): the graph has two leaves. Run `manage.py makemigrations --merge`."
            )
        targets = safe_migrate.resolve_targets(executor, options["app_label"], options["migration_name"])
        plan = executor.migration_plan(targets)
        log(f"Plan for database {connection.alias!r} ({connection.vendor}): {len(plan)} migration(s)")
        self._applier = applier = Applier(connection)
        if connection.alias == DEFAULT_DB_ALIAS:
            waiter = ReplayWait(connection, log)
            applier.after_commit, report.replicas = waiter, waiter.entries
        inner = dict(options, safe=False)
        # Django's "Applying …" lines repeat the plan printed above: shown from -v2 on.
        inner["verbosity"] = max(0, options["verbosity"] - 1)
        if options["json"]:
            inner["verbosity"] = 0  # keep stdout for the JSON report

        def apply() -> None:
            try:
                DjangoMigrateCommand.handle(self, *args, **inner)
            finally:
                self.verbosity = options["verbosity"]  # Django's handle() set it to the inner one

        flags = safe_migrate.Options(
            allow_unsafe=options["allow_unsafe"], check_safety=options["check_safety"], no_backup=options["no_backup"],
            lock_retries=options["lock_retries"],
            rehearse="only" if options["rehearse_only"] else ("yes" if options["rehearse"] else ""),
            confirm=self._confirm if options["interactive"] and not options["json"] else None,
        )
        try:
            return safe_migrate.run(connection, executor, plan, apply, applier, flags, log, warn, report)
        finally:
            self._applier = None

    def _confirm(self, question: str) -> bool:
        try:
            return input(question).strip().lower() in ("y", "yes")
        except EOFError:  # no terminal: take it as no
            return False

    def _finish(self, report: safe_migrate.Report, as_json: bool) -> None:
        if as_json:
            self.stdout.write(report.as_json())
            return
        if self.verbosity < 1 or report.status == RunStatus.REFUSED:
            return
        lines = [f"Result: {report.status}"]
        if report.applied:
            lines += _applied_lines(report, detailed=self.verbosity >= 2)
        lines += [_wrapped(_online(entry)) for entry in report.online]
        undone = report.rolled_back + report.reversed_operations + report.unapplied
        if undone:
            lines.append(_wrapped("Rolled back: " + ", ".join(undone)))
        if report.stays:
            lines.append(_wrapped("Stays: " + "; ".join(report.stays)))
        if report.backup:
            lines.append(f"Backup: {report.backup}")
        if report.applied:
            lines.append(f"Longest write lock held by migrate: {report.longest_lock_seconds:.2f} s")
        lines += _replica_lines(report.replicas)
        if report.status == RunStatus.OK:
            warnings = len(report.verification)
            lines.append("Verified: the live schema matches the migrations; integrity and foreign keys hold"
                         + (f" ({warnings} warning(s) above)" if warnings else "") + ".")
        timing = ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items())
        if timing:
            lines.append(f"Time: {timing}")
        self.stdout.write("\n".join(lines), style_func=self.style.SUCCESS if report.status == RunStatus.OK else None)
        sys.stdout.flush()
