"""The safe migrate path: lock → plan → safety → room → snapshot → apply → verify → report.

Django's executor applies the plan; everything around that call lives here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from django.conf import settings
from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.exceptions import AmbiguityError
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration

from songsgen.db.exceptions import MigrateFailed, MigrateRefused, RehearsalError, UndoFailed, VerificationFailed
from songsgen.db.migrate import marker, observe, pglocks, rehearse, rehearse_leftovers, snapshot
from songsgen.db.migrate.apply import Applier, Key, undo_run
from songsgen.db.migrate.online import leftovers as online_leftovers
from songsgen.db.migrate.online.plan import plan_online
from songsgen.db.migrate.pglocks import BlockerWatch, backoff_delays
from songsgen.db.migrate.runstatus import RunStatus
from songsgen.db.migrate.safety.check import check_plan, finding_dict, finding_line
from songsgen.db.migrate.schema import applied_state
from songsgen.db.migrate.verify import after_commit_problems, in_transaction, part, tables_changed_by, verify

Plan = list[tuple[Migration, bool]]
__all__ = ["Options", "Report", "run"]


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
    report_format: int = 2  # 2: each findings[] entry is Problem.as_dict() plus the keys it had before
    status: RunStatus = RunStatus.PENDING
    plan: list[PlanStep] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    backup: str | None = None
    guard: str = ""  # transaction | transaction+reverse
    applied: list[dict[str, Any]] = field(default_factory=list)
    verification: list[dict[str, object]] = field(default_factory=list)
    failed_migration: str | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    rolled_back: list[str] = field(default_factory=list)  # undone by the transaction's rollback
    unapplied: list[str] = field(default_factory=list)  # undone by reverse operations
    reversed_operations: list[str] = field(default_factory=list)  # of a non-atomic migration that failed half-way
    stays: list[str] = field(default_factory=list)  # what a failure's undo could not undo, with why
    # The longest any grouped transaction of ours lasted (SQLite: held the write lock); each `applied` entry
    # has its own measured `lock_seconds` and `locks` (`songsgen.db.migrate.lockmeter`) and its `transaction`.
    longest_lock_seconds: float = 0.0
    attempts: int = 1
    lock_waits: list[dict[str, Any]] = field(default_factory=list)
    rehearsal: dict[str, Any] | None = None
    # SQLite: each table rebuilt online (`songsgen.db.migrate.online`), with its migration
    online: list[dict[str, Any]] = field(default_factory=list)
    # PostgreSQL with read replicas: each replica's replay of each commit (`songsgen.db.replicas.ReplayWait`)
    replicas: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


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


# --- the whole path ---------------------------------------------------------------------------------
@dataclass
class Options:
    allow_unsafe: bool = False
    check_safety: bool = False
    no_backup: bool = False
    lock_retries: int = 5
    rehearse: str = ""  # "" | "yes" (then ask, unless confirm is None) | "only"
    confirm: Callable[[str], bool] | None = None


def is_lock_timeout(exc: BaseException) -> bool:
    """A PostgreSQL lock_timeout (SQLSTATE 55P03), however Django wrapped it."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) == "55P03" or "lock timeout" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def run(
    connection: BaseDatabaseWrapper,
    executor: MigrationExecutor,
    plan: Plan,
    apply: Callable[[], None],
    applier: Applier,
    options: Options,
    log: Callable[[str], None],
    warn: Callable[[str], None],
    report: Report,
) -> Report:
    """The safe path around `apply`, filling `report`; the caller holds the database lock.

    Raises MigrateRefused before anything changed, MigrateFailed after (`restored`: back at the migrations
    it had before)."""
    before = {key for key in executor.loader.applied_migrations}
    handled = online_leftovers.remove(connection)  # a killed online change's; its migration is finished below
    for item in handled:
        warn(item.done())
    for item in set(online_leftovers.find(connection)) - set(handled):
        warn(item.kept())
    marker.check(connection, before, log, [f"{m.app_label}.{m.name}" for m, _ in plan])
    for leftover in rehearse_leftovers.remove_leftovers(connection):  # we hold the lock: no rehearsal uses them
        warn(f"Removed the {leftover.describe()}.")
    clock = time.monotonic()

    report.plan = describe_plan(plan)
    for step in report.plan:
        direction = "unapply" if step.backwards else "apply"
        flags = [] if step.reversible else ["IRREVERSIBLE"]
        if not step.atomic:
            flags.append("non-atomic")
        log(f"  {direction} {step.migration}" + (f"  [{', '.join(flags)}]" if flags else ""))

    state = applied_state(executor)  # what is applied now: the safety checks and the applier start from it
    findings = check_plan(connection, plan, state)
    report.findings = [finding_dict(f) for f in findings]
    report.seconds["safety"] = round(time.monotonic() - clock, 3)
    unsafe = [f for f in findings if f.blocking]
    for finding in findings:
        (warn if finding.blocking else log)(finding_line(finding))
    if options.check_safety:
        if unsafe:
            raise MigrateRefused(f"{len(unsafe)} unsafe operation(s) in the pending migrations (see above).")
        report.status = RunStatus.SAFE
        return report
    if unsafe and not options.allow_unsafe:
        raise MigrateRefused(
            f"{len(unsafe)} unsafe operation(s) in the pending migrations (see above). Nothing was changed. "
            "Fix them as suggested, or run with --allow-unsafe if you accept the risk."
        )
    if not plan:
        apply()
        report.status = RunStatus.NOTHING_TO_DO
        return report

    report.guard = "transaction" if all(step.atomic for step in report.plan) else "transaction+reverse"
    snap: Path | None = None
    if options.no_backup:
        if options.rehearse:
            raise MigrateRefused("--rehearse needs the snapshot: drop --no-backup. Nothing was changed.")
        warn("--no-backup: no disaster-recovery snapshot is taken (a failure still rolls back).")
    else:
        tick = time.monotonic()
        snap = snapshot.take_checked(connection, Path(settings.BACKUP_DIR),  # SQLite: the scratch copy beside it
                                     scratch=bool(options.rehearse) and connection.vendor == "sqlite")
        report.seconds["backup"], report.backup = round(time.monotonic() - tick, 3), str(snap)
        log(f"Backup (kept for disaster recovery): {snap} ({snap.stat().st_size / 2**20:,.1f} MiB, "
            f"{report.seconds['backup']:.1f} s)")
    if options.rehearse and snap is not None:
        try:
            go_on = _rehearse(connection, snap, plan, options, report, log, warn)
        finally:  # a rehearsal's snapshot counts against the newest MIGRATE_KEEP_SNAPSHOTS too
            snapshot.prune_snapshots(connection, snap.parent, int(settings.MIGRATE_KEEP_SNAPSHOTS))
        if not go_on:
            return report
    if connection.vendor == "sqlite":  # only SQLite defers its foreign-key check to the commit
        applier.tables_of = tables_changed_by(plan, state)
    applier.online = plan_online(connection, plan, state, log, warn)
    if applier.online:  # run operation by operation: undone by reverse operations, as non-atomic ones
        report.guard = "transaction+reverse"
    marker.write(connection, snap, [s.migration for s in report.plan], before, list(applier.online))
    attempt = _apply(connection, plan, apply, applier, options, report, before, snap, log, warn)
    report.attempts = attempt
    report.applied = applier.applied
    report.longest_lock_seconds = applier.longest_hold
    pglocks.unlimit_waits(connection)
    marker.clear(connection)
    if snap is not None:
        snapshot.prune_snapshots(connection, snap.parent, int(settings.MIGRATE_KEEP_SNAPSHOTS))
    report.status = RunStatus.OK
    report.seconds["total"] = round(time.monotonic() - clock, 3)
    return report


def _rehearse(
    connection: BaseDatabaseWrapper, snap: Path, plan: Plan, options: Options, report: Report,
    log: Callable[[str], None], warn: Callable[[str], None],
) -> bool:
    """Apply the plan to a scratch copy of the snapshot and report; False when the live run stops here."""
    try:
        rehearsal = rehearse.rehearse(connection, snap, [(m.app_label, m.name, back) for m, back in plan], log=log)
    except RehearsalError as exc:
        snap.unlink(missing_ok=True)  # taken for this run, which changed nothing: no snapshot left to fill the disk
        raise MigrateRefused(f"The rehearsal could not run: {exc}. Nothing was changed; the snapshot taken for "
                             "it is removed.") from exc
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the rehearsal process is stopped, its copy removed
        raise MigrateRefused(f"The rehearsal was interrupted ({exc or 'Ctrl-C'}). Nothing was changed.") from exc
    report.rehearsal = rehearsal.as_dict()
    for line in rehearse.format_report(rehearsal):
        log(line)
    if not rehearsal.ok:
        raise MigrateRefused("The rehearsal failed (see above); the live database was not touched.")
    if options.rehearse == "only":
        report.status = RunStatus.REHEARSED
        return False
    if options.confirm is not None and not options.confirm("Apply this plan to the live database? [y/N] "):
        report.status = RunStatus.REHEARSED
        log("Not applied: the live database was not touched.")
        return False
    return True


def _apply(
    connection: BaseDatabaseWrapper, plan: Plan, apply: Callable[[], None], applier: Applier, options: Options,
    report: Report, before: set[Key], snap: Path | None, log: Callable[[str], None], warn: Callable[[str], None],
) -> int:
    """Apply and verify; on PostgreSQL retry a lock timeout with backoff. Return the attempts it took."""
    pg = connection.vendor == "postgresql"
    attempts = options.lock_retries + 1 if pg else 1
    applier.resume, applier.log = marker.resume_point(connection), log
    applier.on_progress = lambda progress: marker.record_progress(connection, progress)
    # A group that drops a table or column is verified before its commit, while the drop can still roll back.
    applier.verify_group = lambda labels: _verify(connection, part(plan, labels), report, log, warn)
    delays = backoff_delays(attempts - 1)
    for attempt in range(1, attempts + 1):
        stage, tick = "apply", time.monotonic()
        watch = BlockerWatch(connection) if pg else None
        try:
            heard = observe.listening(lambda stats: report.online.append({"migration": applier.current,
                                                                          **stats.as_dict()}), log)
            with applier.metered(), heard:  # each migration's write lock, as the rehearsal measures it
                if pg:
                    pglocks.limit_waits(connection)
                with watch or nullcontext():
                    apply()
                report.seconds["apply"] = round(time.monotonic() - tick, 3)
                stage, tick = "verify", time.monotonic()
                # Under the lock only what the open transaction changed; the rest of the plan committed already.
                checked = _verify(connection, in_transaction(plan, applier), report, log, warn)
                applier.commit(keys_checked=checked)
            applier.measure()
            if connection.vendor == "sqlite":  # read-only: outside the write lock
                _check_after_commit(connection, plan, checked, report, warn)
            report.seconds["verify"] = round(time.monotonic() - tick, 3)
            return attempt
        except BaseException as exc:  # an error, a failed verification, Ctrl-C
            failed_in = applier.current
            if isinstance(exc, VerificationFailed):
                stage, failed_in = "verify", failed_in or ", ".join(applier.grouped) or None
            report.rolled_back += applier.rollback(exc)
            applier.measure()  # a hold the rollback ended counts up to now
            who = watch.describe() if watch else ""
            if attempt < attempts and is_lock_timeout(exc) and not isinstance(exc, KeyboardInterrupt):
                delay = delays[attempt - 1]
                warn(f"Lock timeout{f' in {failed_in}' if failed_in else ''} (attempt {attempt} of {attempts}), "
                     f"rolled back; {who or 'the blocking session was gone before it could be named'}. "
                     f"Retrying in {delay:.1f} s.")
                report.lock_waits.append({"attempt": attempt, "migration": failed_in, "blocked_by": who})
                applier.reset()
                time.sleep(delay)
                continue
            _fail(connection, exc, stage, failed_in, applier, before, snap, report, log, warn, who)
    raise AssertionError("unreachable: the last attempt returns or fails")


def _check_after_commit(
    connection: BaseDatabaseWrapper, plan: Plan, checked: set[str] | None, report: Report,
    warn: Callable[[str], None],
) -> None:
    problems = after_commit_problems(connection, plan, checked)
    report.verification += [p.as_dict() for p in problems]
    for problem in problems:
        warn(problem.line())
    if problems:
        raise VerificationFailed(f"{len(problems)} problem(s), first: {problems[0]}")


def _verify(
    connection: BaseDatabaseWrapper, plan: Plan, report: Report, log: Callable[[str], None],
    warn: Callable[[str], None],
) -> set[str] | None:
    """Schema and foreign keys, inside the transaction; return the tables checked (None: all)."""
    problems, tables = verify(connection, plan, pages=False)
    problems = [p for p in problems if p.as_dict() not in report.verification]  # a group's, verified before
    report.verification += [p.as_dict() for p in problems]
    errors = [p for p in problems if p.blocking]
    for problem in problems:
        (warn if problem.blocking else log)(problem.line())
    if errors:
        raise VerificationFailed(f"{len(errors)} problem(s), first: {errors[0]}")
    return tables


def _leftovers_after_undo(connection: BaseDatabaseWrapper) -> list[online_leftovers.Leftover]:
    """What a failed safe-DDL step's own undo could not remove (it waited behind the same session): removed
    now if that comes within the lock timeout, else returned to be named."""
    if connection.vendor != "postgresql":
        return []
    try:
        pglocks.limit_waits(connection)
        online_leftovers.remove(connection)
    except DatabaseError:
        connection.close()  # the lock timeout: the session is gone with its settings
    return online_leftovers.find(connection)


def _fail(
    connection: BaseDatabaseWrapper, exc: BaseException, stage: str, failed_in: str | None, applier: Applier,
    before: set[Key], snap: Path | None, report: Report, log: Callable[[str], None], warn: Callable[[str], None],
    blockers: str,
) -> NoReturn:
    """Undo what this run committed by reverse operations; raise MigrateFailed saying where the database is."""
    report.applied, report.failed_migration = applier.applied, failed_in
    report.longest_lock_seconds = applier.longest_hold
    what = (str(exc) or "Ctrl-C") if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
    report.error = f"{stage} failed: {what}"
    where = f" while applying {failed_in}" if failed_in else ""
    if connection.vendor == "postgresql":
        connection.close()  # a session in a failed state; its timeouts go with it
    try:
        with marker.orphans_kept_out_of_the_way(connection):  # a committed drop's orphans must not stop the undo
            undo = undo_run(connection, before, log, applier.interrupted,
                            lambda p: marker.record_progress(connection, p))
    except UndoFailed as undo_exc:
        report.status = RunStatus.FAILED
        warn(f"UNDO FAILED: {undo_exc}")
        raise MigrateFailed(
            f"{stage.capitalize()} failed{where}: {what}\n{marker.snapshot_advice(snap, str(undo_exc))}",
            restored=False,
        ) from exc
    report.unapplied, report.reversed_operations, report.stays = undo.unapplied, undo.reversed, undo.stays
    parts = undo.parts(report.rolled_back)
    if undo.stays:
        report.status = RunStatus.FAILED
        marker.write_stopped(connection, snap, before, undo, report.error)
        done = f"Undone: {'; '.join(parts)}. " if parts else ""
        raise MigrateFailed(f"{stage.capitalize()} failed{where}: {what}\nThe database could NOT be brought all "
                            f"the way back. {done}{marker.stopped_advice(undo, snap)}", restored=False) from exc
    marker.clear(connection)
    report.status = RunStatus.RESTORED
    left = _leftovers_after_undo(connection)
    how = ("The database is back as it was before this migrate: " + ("; ".join(parts) or "nothing had changed")
           + ". Rows other connections committed meanwhile are kept.")
    if left:
        how = ("The migrations are back as they were before this migrate" + (f": {'; '.join(parts)}" if parts else "")
               + ". Rows other connections committed meanwhile are kept. Left behind, because the session that "
               "blocked the migrate also blocked their removal: " + "; ".join(item.describe() for item in left)
               + ". The next migrate or dbcheck removes them.")
    if undo.unfinished:
        how += (f" Not undone: what {undo.unfinished}, the operation that failed, wrote before failing (it runs "
                "outside a transaction; a batched backfill continues from there).")
    if snap is not None:
        how += f" The snapshot {snap} is kept for disaster recovery."
    if is_lock_timeout(exc):
        how += (
            f"\nAnother session held a lock on a table this migration changes for longer than the lock timeout "
            f"({settings.MIGRATE_LOCK_TIMEOUT_MS} ms, SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS) on every attempt; rather "
            f"than queue behind it and stall every query on that table, migrate gave up. {blockers}".rstrip()
            + " Find the session in pg_stat_activity (long transactions, idle in transaction) and run migrate "
            "again when it is done."
        )
    raise MigrateFailed(f"{stage.capitalize()} failed{where}: {what}\n{how}", restored=True) from exc
