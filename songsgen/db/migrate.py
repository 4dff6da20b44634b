"""The safe migrate path: plan → safety → room → snapshot → apply → verify → restore on failure → report.

`manage.py migrate` (songsgen/management/commands/migrate.py) parses Django's options and hands this
module two things: the plan Django's executor computed, and a callable that applies it exactly as Django's
own `migrate` would (signals, syncdb, every option). Everything around that call lives here.

On SQLite the guard is a snapshot taken with the backup API and copied back on failure. On PostgreSQL,
where DDL is transactional, a plan whose migrations are all atomic runs in one transaction and a failure
rolls back; a plan with non-atomic migrations needs a pg_dump snapshot, which does not exist yet, so it
is refused unless `--no-backup`.

A marker file in the data folder exists exactly while migrations are being applied. A process killed in
that window (SIGKILL, power loss) leaves it behind; the next `migrate` refuses to run and offers
`--resume-restore`, which puts the snapshot back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.exceptions import AmbiguityError
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration
from django.db.migrations.operations.fields import FieldOperation
from django.db.migrations.operations.models import IndexOperation, ModelOperation
from django.db.migrations.state import ProjectState

from songsgen.db import schema, snapshot
from songsgen.db.safety import Finding, check_plan

Plan = list[tuple[Migration, bool]]


class MigrateRefused(Exception):
    """The safe path stopped before changing anything."""


class MigrateFailed(Exception):
    """Applying or verifying failed; `restored` says whether the database is back as it was."""

    def __init__(self, message: str, *, restored: bool) -> None:
        super().__init__(message)
        self.restored = restored


@dataclass
class PlanStep:
    migration: str
    backwards: bool
    reversible: bool
    atomic: bool


@dataclass
class Report:
    """What the safe migrate did; printed for people, or as JSON with --json."""

    database: str
    vendor: str
    status: str = "pending"  # ok | nothing-to-do | safe | refused | restored | failed | resume-restored
    plan: list[PlanStep] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    backup: str | None = None
    guard: str = ""  # snapshot | transaction | none
    applied: list[dict[str, Any]] = field(default_factory=list)
    verification: list[dict[str, str]] = field(default_factory=list)
    failed_migration: str | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


@dataclass
class Progress:
    """Filled by the command's progress callback while Django's executor runs."""

    current: str | None = None
    started: float = 0.0
    applied: list[dict[str, Any]] = field(default_factory=list)

    def start(self, migration: Migration) -> None:
        self.current, self.started = f"{migration.app_label}.{migration.name}", time.monotonic()

    def finish(self) -> None:
        if self.current:
            self.applied.append({"migration": self.current, "seconds": round(time.monotonic() - self.started, 3)})
        self.current = None


# --- plan -------------------------------------------------------------------------------------------
def resolve_targets(executor: MigrationExecutor, app_label: str | None, migration_name: str | None) -> list:
    """Targets as Django's migrate works them out from `app_label [migration_name]`."""
    from django.core.management.base import CommandError

    if not app_label:
        return executor.loader.graph.leaf_nodes()
    if migration_name is None:
        return [key for key in executor.loader.graph.leaf_nodes() if key[0] == app_label]
    if migration_name == "zero":
        return [(app_label, None)]
    try:
        migration = executor.loader.get_migration_by_prefix(app_label, migration_name)
    except AmbiguityError:
        raise CommandError(f"More than one migration matches '{migration_name}' in app '{app_label}'.") from None
    except KeyError:
        raise CommandError(f"Cannot find a migration matching '{migration_name}' from app '{app_label}'.") from None
    return [(migration.app_label, migration.name)]


def describe_plan(plan: Plan) -> list[PlanStep]:
    """Each migration with whether it can be reversed and whether it runs in a transaction."""
    return [
        PlanStep(
            migration=f"{m.app_label}.{m.name}",
            backwards=backwards,
            reversible=all(op.reversible for op in m.operations),
            atomic=bool(m.atomic),
        )
        for m, backwards in plan
    ]


def applied_state(executor: MigrationExecutor) -> ProjectState:
    """The project state of the migrations applied now (django_migrations as the executor's loader read it).

    The migration graph's own state of its applied nodes and their dependencies, through the loader's
    public `project_state()`; a recorded migration whose file is gone is not part of the graph and
    is left out, as Django's executor does.
    """
    loader = executor.loader
    applied = [key for key in loader.applied_migrations if key in loader.graph.nodes]
    return loader.project_state(applied, at_end=True) if applied else ProjectState(real_apps=loader.unmigrated_apps)


def safety_findings(connection: BaseDatabaseWrapper, executor: MigrationExecutor, plan: Plan) -> list[Finding]:
    """Run the safety checks on the plan, from the state of what is applied now."""
    return check_plan(connection, plan, applied_state(executor))


# --- room -------------------------------------------------------------------------------------------
def database_size(connection: BaseDatabaseWrapper) -> int:
    """Bytes a backup of this database needs, about: file plus WAL, or pg_database_size."""
    if connection.vendor == "sqlite":
        path = Path(connection.settings_dict["NAME"])
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        return int(cursor.fetchone()[0])


def check_room(connection: BaseDatabaseWrapper, directory: Path) -> tuple[int, int]:
    """(needed, free) bytes; raise MigrateRefused when the backup folder lacks room."""
    snapshot.prepare_folder(directory)
    needed = int(database_size(connection) * float(settings.MIGRATE_BACKUP_SIZE_FACTOR)) + int(
        settings.MIGRATE_BACKUP_MARGIN_BYTES
    )
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise MigrateRefused(
            f"Not enough room for the backup in {directory}: {free / 2**20:,.1f} MiB free, "
            f"{needed / 2**20:,.1f} MiB needed (database size x {settings.MIGRATE_BACKUP_SIZE_FACTOR} + "
            f"{settings.MIGRATE_BACKUP_MARGIN_BYTES / 2**20:,.0f} MiB margin). Nothing was changed. Free space, "
            "point SONGSGEN_BACKUP_DIR at a bigger disk, or run with --no-backup at your own risk."
        )
    return needed, free


# --- crash marker -----------------------------------------------------------------------------------
def marker_path(connection: BaseDatabaseWrapper) -> Path:
    """The marker for this database: one per alias and database name, in the data folder."""
    name = str(connection.settings_dict.get("NAME") or "")
    digest = hashlib.sha256(f"{connection.vendor}:{name}".encode()).hexdigest()[:12]
    return Path(settings.DATA_DIR) / f"migrate-in-progress-{connection.alias}-{digest}.json"


def read_marker(connection: BaseDatabaseWrapper) -> dict[str, Any] | None:
    path = marker_path(connection)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"snapshot": None, "plan": [], "started": "unknown", "unreadable": True}


def _write_marker(connection: BaseDatabaseWrapper, data: dict[str, Any]) -> None:
    path = marker_path(connection)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _clear_marker(connection: BaseDatabaseWrapper) -> None:
    marker_path(connection).unlink(missing_ok=True)


def refuse_if_marked(connection: BaseDatabaseWrapper) -> None:
    """Stop when a previous migrate died while applying."""
    marker = read_marker(connection)
    if marker is None:
        return
    raise MigrateRefused(
        f"A previous migrate (pid {marker.get('pid', '?')}, started {marker.get('started')}) was interrupted while "
        f"applying {', '.join(marker.get('plan', [])) or 'migrations'}; the database may be half-migrated. "
        f"Run `manage.py migrate --resume-restore` to put back the snapshot taken before it "
        f"({marker.get('snapshot') or 'none recorded'}), then migrate again."
    )


def resume_restore(connection: BaseDatabaseWrapper, report: Report, log: Callable[[str], None]) -> Report:
    """Put back the snapshot a killed migrate left behind; clear its marker."""
    marker = read_marker(connection)
    if marker is None:
        raise MigrateRefused("There is no interrupted migrate to restore from: no marker in the data folder.")
    path = marker.get("snapshot")
    if path:
        log(f"Restoring {path} taken before the interrupted migrate ...")
        try:
            snapshot.restore_snapshot(connection, Path(path))
        except snapshot.SnapshotError as exc:
            raise MigrateFailed(f"restoring {path} failed: {exc}", restored=False) from exc
        report.backup = path
        problems = [p for p in schema.integrity_problems(connection) if p.severity == schema.ERROR]
        if problems:
            raise MigrateFailed(f"restored, but the check failed: {problems[0]}", restored=False)
        log("The database is back as it was before the interrupted migrate.")
    else:
        log("The interrupted migrate ran in one transaction, which the server rolled back; nothing to restore.")
    _clear_marker(connection)
    report.status = "resume-restored"
    return report


# --- verify -----------------------------------------------------------------------------------------
def touched_tables(plan: Plan, state: ProjectState) -> set[str] | None:
    """The tables the plan's operations change; None when one may change any table (RunSQL, RunPython)."""
    tables: set[str] = set()
    for migration, _backwards in plan:
        for op in migration.operations:
            if not isinstance(op, ModelOperation | FieldOperation | IndexOperation):
                return None  # RunSQL, RunPython, SeparateDatabaseAndState, custom operations
            name = getattr(op, "model_name", None) or getattr(op, "name", None)
            try:
                tables.add(state.apps.get_model(migration.app_label, name)._meta.db_table)
            except LookupError:
                continue  # the model is gone (DeleteModel): nothing left to check
    return tables


def verify(connection: BaseDatabaseWrapper, plan: Plan | None = None) -> list[schema.Problem]:
    """The live schema equals the state of the applied migrations; integrity and foreign keys hold.

    The schema is compared in full; the integrity and foreign-key checks cover the tables the plan
    changed when that is known (`touched_tables`), else the whole database."""
    # A fresh executor reads django_migrations as it is now (inside our transaction on PostgreSQL).
    state = applied_state(MigrationExecutor(connection))
    expected = schema.expected_schema(state, connection)
    problems = schema.compare_schema(expected, connection)
    quick = getattr(settings, "MIGRATE_VERIFY_INTEGRITY", "full") == "quick"
    tables = touched_tables(plan, state) if plan is not None else None
    problems += schema.integrity_problems(connection, quick=quick, tables=tables)
    if connection.vendor == "postgresql":
        # NOT VALID is how a big-table constraint is added safely; report it, do not fail on it.
        problems = [
            schema.Problem(schema.WARNING, p.check, p.subject, p.detail) if p.check == "constraints" else p
            for p in problems
        ]
    return problems


# --- the whole path ---------------------------------------------------------------------------------
@dataclass
class Options:
    allow_unsafe: bool = False
    check_safety: bool = False
    no_backup: bool = False


def _set_pg_timeouts(connection: BaseDatabaseWrapper, local: bool) -> None:
    scope = "LOCAL " if local else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SET {scope}lock_timeout = %s", [f"{int(settings.MIGRATE_LOCK_TIMEOUT_MS)}ms"])
        cursor.execute(f"SET {scope}statement_timeout = %s", [f"{int(settings.MIGRATE_STATEMENT_TIMEOUT_MS)}ms"])


def run(
    connection: BaseDatabaseWrapper,
    executor: MigrationExecutor,
    plan: Plan,
    apply: Callable[[], None],
    progress: Progress,
    options: Options,
    log: Callable[[str], None],
    warn: Callable[[str], None],
    report: Report,
) -> Report:
    """The safe path around `apply`, filling `report`. Raises MigrateRefused / MigrateFailed."""
    refuse_if_marked(connection)
    clock = time.monotonic()

    report.plan = describe_plan(plan)
    for step in report.plan:
        direction = "unapply" if step.backwards else "apply"
        flags = [] if step.reversible else ["IRREVERSIBLE"]
        if not step.atomic:
            flags.append("non-atomic")
        log(f"  {direction} {step.migration}" + (f"  [{', '.join(flags)}]" if flags else ""))

    findings = safety_findings(connection, executor, plan)
    report.findings = [f.as_dict() for f in findings]
    report.seconds["safety"] = round(time.monotonic() - clock, 3)
    unsafe = [f for f in findings if f.blocking]
    for finding in findings:
        (warn if finding.blocking else log)(str(finding))
    if options.check_safety:
        report.status = "unsafe" if unsafe else "safe"
        if unsafe:
            raise MigrateRefused(f"{len(unsafe)} unsafe operation(s) in the pending migrations (see above).")
        return report
    if unsafe and not options.allow_unsafe:
        raise MigrateRefused(
            f"{len(unsafe)} unsafe operation(s) in the pending migrations (see above). Nothing was changed. "
            "Fix them as suggested, or run with --allow-unsafe if you accept the risk."
        )
    if not plan:
        apply()
        report.status = "nothing-to-do"
        return report

    in_transaction = connection.vendor == "postgresql" and all(step.atomic for step in report.plan)
    snap: Path | None = None
    if options.no_backup:
        warn("--no-backup: no snapshot is taken; a failure cannot be undone by a restore.")
        report.guard = "transaction" if in_transaction else "none"
    elif in_transaction:
        report.guard = "transaction"
        log("PostgreSQL: every migration is atomic, so the plan runs in one transaction (rolled back on failure).")
    else:
        directory = Path(settings.BACKUP_DIR)
        check_room(connection, directory)
        tick = time.monotonic()
        try:
            snap = snapshot.take_snapshot(connection, directory)
        except snapshot.SnapshotError as exc:
            raise MigrateRefused(
                f"The backup before migrating failed ({exc}). Nothing was changed. Fix the cause and run again, "
                "or take a backup yourself and run with --no-backup."
            ) from exc
        report.seconds["backup"] = round(time.monotonic() - tick, 3)
        report.backup, report.guard = str(snap), "snapshot"
        log(f"Backup: {snap} ({snap.stat().st_size / 2**20:,.1f} MiB, {report.seconds['backup']:.1f} s)")
        _write_marker(connection, {
            "snapshot": str(snap), "plan": [s.migration for s in report.plan], "pid": os.getpid(),
            "started": datetime.now(UTC).isoformat(), "database": str(connection.settings_dict.get("NAME")),
        })

    tick = time.monotonic()
    stage = "apply"
    try:
        with transaction.atomic(using=connection.alias) if in_transaction else nullcontext():
            if connection.vendor == "postgresql":
                _set_pg_timeouts(connection, local=in_transaction)
            apply()
            report.seconds["apply"] = round(time.monotonic() - tick, 3)
            stage, tick = "verify", time.monotonic()
            problems = verify(connection, plan)
            report.verification = [p.as_dict() for p in problems]
            errors = [p for p in problems if p.severity == schema.ERROR]
            for problem in problems:
                (warn if problem.severity == schema.ERROR else log)(str(problem))
            if errors:
                raise VerificationFailed(f"{len(errors)} problem(s), first: {errors[0]}")
            report.seconds["verify"] = round(time.monotonic() - tick, 3)
    except BaseException as exc:  # an error, a failed verification, Ctrl-C: all undo the plan
        report.applied = progress.applied
        report.failed_migration = progress.current
        what = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        report.error = f"{stage} failed: {what}"
        where = f" while applying {progress.current}" if progress.current else ""
        restored, how = _undo(connection, snap, in_transaction, warn)
        report.status = "restored" if restored else "failed"
        if connection.vendor == "postgresql" and not in_transaction:
            _reset_pg_timeouts(connection)
        if restored:
            _clear_marker(connection)
        if "lock timeout" in str(exc):
            how += (
                f"\nAnother session held a lock on a table this migration changes for longer than the lock timeout "
                f"({settings.MIGRATE_LOCK_TIMEOUT_MS} ms, SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS); rather than queue behind "
                "it and stall every query on that table, migrate gave up. Find the session in pg_stat_activity "
                "(long transactions, idle in transaction) and run migrate again when it is done."
            )
        raise MigrateFailed(f"{stage.capitalize()} failed{where}: {what}\n{how}", restored=restored) from exc
    report.applied = progress.applied
    if connection.vendor == "postgresql" and not in_transaction:
        _reset_pg_timeouts(connection)
    _clear_marker(connection)
    if snap is not None:
        snapshot.prune_snapshots(connection, snap.parent, int(settings.MIGRATE_KEEP_SNAPSHOTS))
    report.status = "ok"
    report.seconds["total"] = round(time.monotonic() - clock, 3)
    return report


class VerificationFailed(Exception):
    """The live schema or the data's integrity does not match the applied migrations."""


def _reset_pg_timeouts(connection: BaseDatabaseWrapper) -> None:
    if connection.connection is None or connection.needs_rollback:
        return
    with connection.cursor() as cursor:
        cursor.execute("RESET lock_timeout")
        cursor.execute("RESET statement_timeout")


def _undo(
    connection: BaseDatabaseWrapper, snap: Path | None, in_transaction: bool, warn: Callable[[str], None]
) -> tuple[bool, str]:
    """Put the database back; (restored, a sentence saying what happened)."""
    if in_transaction:
        return True, "The transaction was rolled back: the database is back as it was before this migrate."
    if snap is None:
        return False, "No backup was taken (--no-backup): the database may be half-migrated. Check it with dbcheck."
    try:
        snapshot.restore_snapshot(connection, snap)
    except BaseException as exc:  # noqa: BLE001 — report the restore failure itself, loudly
        warn(f"RESTORE FAILED: {type(exc).__name__}: {exc}")
        return False, (
            f"Restoring the backup FAILED; the database may be half-migrated. The backup is intact at {snap}: "
            "run `manage.py migrate --resume-restore` or restore it by hand."
        )
    return True, f"The backup {snap} was restored: the database is back as it was before this migrate."
