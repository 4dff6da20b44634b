"""The safe migrate's crash marker, and finishing the rollback of a migrate that was killed.

The migrate lock, not the marker, tells a running migrate from a dead one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.atomicfile import replaced_when_complete
from songsgen.db.dblock import database_lock
from songsgen.db.exceptions import DatabaseBusy, MigrateFailed, MigrateRefused, SnapshotError, UndoFailed
from songsgen.db.migrate import schema, snapshot
from songsgen.db.migrate.apply import Key, Undo, label, undo_run
from songsgen.db.migrate.partial import Progress
from songsgen.db.migrate.runstatus import RunStatus


def path(connection: BaseDatabaseWrapper) -> Path:
    """The marker for this database: one per alias and database name, in the data folder."""
    name = str(connection.settings_dict.get("NAME") or "")
    digest = hashlib.sha256(f"{connection.vendor}:{name}".encode()).hexdigest()[:12]
    return Path(settings.DATA_DIR) / f"migrate-in-progress-{connection.alias}-{digest}.json"


def stopped_path(connection: BaseDatabaseWrapper) -> Path:
    """The record a failed migrate leaves when its undo had to stop (what stays, the snapshot)."""
    where = path(connection)
    return where.with_name(where.name.replace("migrate-in-progress-", "migrate-stopped-", 1))


def read(connection: BaseDatabaseWrapper, where: Path | None = None) -> dict[str, Any] | None:
    """The marker's contents, or None when there is none."""
    where = where or path(connection)
    if not where.exists():
        return None
    try:
        return dict(json.loads(where.read_text()))
    except (OSError, ValueError):
        return {"snapshot": None, "plan": [], "started": "unknown", "unreadable": True}


def write(connection: BaseDatabaseWrapper, snap: Path | None, plan: list[str], before: set[Key],
          online: list[str] | None = None) -> None:
    """Record, durably, that migrations are being applied, what was applied before, and which migrations
    rebuild online (resumable: each of their operations is all or nothing, and checkable)."""
    where = path(connection)
    data = {
        "snapshot": str(snap) if snap else None, "plan": plan, "online": online or [], "pid": os.getpid(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": str(connection.settings_dict.get("NAME")), "applied_before": sorted(label(k) for k in before),
    }
    _write(where, data)
    if resume_point(connection) is None:  # migrating again: the stopped run's way back by snapshot is given up
        stopped_path(connection).unlink(missing_ok=True)


def _write(where: Path, data: dict[str, Any]) -> None:
    where.parent.mkdir(parents=True, exist_ok=True)  # the data folder, as the settings leave it to us
    with replaced_when_complete(where, mode=0o644) as tmp:
        tmp.write_text(json.dumps(data))


def record_progress(connection: BaseDatabaseWrapper, progress: Progress) -> None:
    """Durably, how far the running non-atomic migration's operations got."""
    data = read(connection)
    if data is not None and not data.get("unreadable"):
        _write(path(connection), dict(data, partial=progress.as_dict()))


def write_stopped(connection: BaseDatabaseWrapper, snap: Path | str | None, before: set[Key], undo: Undo,
                  error: str) -> None:
    """Replace the marker by the record of a failure whose undo stopped: what stays, and the snapshot."""
    data = {"snapshot": str(snap) if snap else None, "applied_before": sorted(label(k) for k in before),
            "stays": undo.stays, "dropped": undo.dropped, "error": error,
            "partial": undo.left.as_dict() if undo.left else None,
            "stopped": datetime.now(UTC).isoformat(timespec="seconds")}
    _write(stopped_path(connection), data)
    path(connection).unlink(missing_ok=True)


def resume_point(connection: BaseDatabaseWrapper) -> Progress | None:
    """The operations a stopped migrate left applied in a migration it did not record (skipped once found done)."""
    data = read(connection, stopped_path(connection))
    return Progress.from_dict(data.get("partial")) if data else None


def clear(connection: BaseDatabaseWrapper) -> None:
    """Remove the marker, and the stopped record once nothing it tells the next run is still needed."""
    path(connection).unlink(missing_ok=True)
    left = resume_point(connection)
    if left is not None:
        from django.db.migrations.recorder import MigrationRecorder

        recorded = left.key in MigrationRecorder(connection).applied_migrations()
        if recorded == left.backwards:
            return  # its half-applied migration is still unrecorded (or, unapplied half-way, still recorded)
    stopped_path(connection).unlink(missing_ok=True)


def _before(data: dict[str, Any]) -> set[Key] | None:
    if "applied_before" not in data:
        return None
    return {tuple(item.split(".", 1)) for item in data["applied_before"]}


def verdict(data: dict[str, Any], applied: set[Key]) -> tuple[bool, str]:
    """(whether a dead run committed anything, what the next migrate says about it); dbcheck says the same."""
    who = f"A previous migrate (pid {data.get('pid', '?')}, started {data.get('started')})"
    before = _before(data)
    progress = Progress.from_dict(data.get("partial"))
    half = progress is not None and progress.started
    if before is not None and before == applied and not half:
        return False, f"{who} was interrupted before it committed a migration; nothing to undo"
    if before is not None and before == applied and _online_resume(data) is not None and progress is not None:
        return False, (f"{who} was interrupted in {progress.migration}, which rebuilds online; its leftovers are "
                       "removed and it is finished, each operation found done skipped")
    changed = sorted(label(k) for k in (applied ^ before)) if before is not None else []
    if half and progress is not None:
        changed.append(f"{'the reverse of ' if progress.backwards else ''}{progress.done} operation(s) of "
                       f"{progress.migration} (unrecorded)")
    return True, (
        f"{who} was interrupted after committing {', '.join(changed) or 'some migrations'}. Run "
        "`manage.py migrate --resume-restore` to undo them by their reverse operations (rows written "
        "since are kept), then migrate again."
    )


def check(connection: BaseDatabaseWrapper, applied: set[Key], log: Callable[[str], None],
          plan: list[str] | None = None) -> None:
    """With the lock held: a marker means a dead run. Carry on if it committed nothing, else refuse. A stopped
    record: carry on, if the plan finishes the migration it left half-applied."""
    stopped = read(connection, stopped_path(connection))
    left = Progress.from_dict(stopped.get("partial")) if stopped else None  # resume_point, read once
    data = read(connection)
    if data is None and left is not None and plan and left.migration not in plan:
        raise MigrateRefused(
            f"{left.migration} is half-applied: a failed migrate left {left.done} of its operations applied "
            f"({'; '.join((stopped or {}).get('stays', []))}). Run `manage.py migrate` with a plan that "
            f"{'unapplies' if left.backwards else 'applies'} it, which skips what is done. Nothing was changed."
        )
    if data is None:
        if stopped is not None:
            log(f"A previous migrate failed and left applied: {'; '.join(stopped.get('stays', []))}. Carrying on "
                "from there" + (f"; {left.migration}'s operations that stay are skipped." if left else "."))
        return
    committed, message = verdict(data, applied)
    if committed:
        raise MigrateRefused(message)
    log(f"{message}, carrying on.")
    resumed = _online_resume(data) if _before(data) == applied else None
    if resumed is not None:  # the applier skips its operations the schema shows done
        _write(stopped_path(connection), {
            "snapshot": data.get("snapshot"), "applied_before": data.get("applied_before"), "stays": [],
            "dropped": [], "error": "interrupted in an online rebuild", "partial": resumed.as_dict()})
    path(connection).unlink(missing_ok=True)


def _online_resume(data: dict[str, Any]) -> Progress | None:
    """A dead run's half-done online migration, as a point to resume from: every operation it started,
    the one under way included, is checked against the live schema (a rebuild is all or nothing)."""
    progress = Progress.from_dict(data.get("partial"))
    if progress is None or not progress.started or progress.migration not in data.get("online", []):
        return None
    done = progress.done + (1 if progress.running is not None else 0)
    return Progress(progress.migration, progress.backwards, done)


def left_by_dead_run(connection: BaseDatabaseWrapper, purpose: str) -> dict[str, Any] | None:
    """The marker of a migrate that died, or None: a marker under a held lock is a migrate running now."""
    if read(connection) is None:
        return None
    try:
        # Held for a moment only; a migrate starting in that moment is told who holds it, like any other.
        with database_lock(connection.settings_dict, purpose=purpose, wait=0):
            return read(connection)  # the migrate may have finished meanwhile
    except DatabaseBusy:
        return None


def snapshot_cost(snap: Path | str) -> str:
    """The snapshot, with what putting it back costs."""
    where = Path(snap)
    try:
        size = f"{where.stat().st_size / 2**20:,.1f} MiB, "
        taken = datetime.fromtimestamp(where.stat().st_mtime, UTC).isoformat(timespec="seconds")
    except OSError:
        return f"the snapshot {snap} (MISSING)"
    return (f"`manage.py migrate --resume-restore --from-snapshot` puts back the snapshot {snap} ({size}taken "
            f"{taken}): every row anyone wrote since then is lost, so stop the application first")


def stopped_advice(undo: Undo, snap: Path | str | None) -> str:
    """What stays after an undo that had to stop, and the two ways on from there."""
    text = "Left applied, since reverse operations cannot undo it: " + "; ".join(undo.stays) + "."
    if undo.dropped:
        text += f" DROPPED, rows not recoverable by reverse operations: {', '.join(undo.dropped)}."
    text += " Running migrate again continues from here (what stays is not run again)."
    if snap:
        text += f" To get back to before this migrate instead, before migrating again: {snapshot_cost(snap)}."
    else:
        text += " No snapshot was taken (--no-backup): restore a backup to get dropped rows back."
    return text


def snapshot_advice(snap: Path | str | None, why: str) -> str:
    """What to say when reverse operations cannot bring the schema back."""
    if not snap:
        return (f"The database could NOT be brought back ({why}) and no snapshot was taken (--no-backup); it may be "
                "half-migrated. Check it with `manage.py dbcheck`.")
    return (
        f"The database could NOT be brought back by reverse operations ({why}); it may be half-migrated. The "
        f"snapshot {snap} is intact. `manage.py migrate --resume-restore --from-snapshot` puts it back; that also "
        "DISCARDS every row anyone wrote since it was taken, so stop the application first and weigh that loss."
    )


def _orphans(connection: BaseDatabaseWrapper, tables: list[str] | None = None) -> set[tuple[str, int, str]]:
    """SQLite: the rows whose foreign key points at nothing, as (table, rowid, parent table)."""
    qn = connection.ops.quote_name
    found: set[tuple[str, int, str]] = set()
    with connection.cursor() as cursor:
        for scope in [f"({qn(t)})" for t in tables] if tables else [""]:
            cursor.execute(f"PRAGMA foreign_key_check{scope}")
            found.update((table, rowid, parent) for table, rowid, parent, _fk in cursor.fetchall())
    return found


@contextmanager
def orphans_kept_out_of_the_way(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """While reverse operations run, fail only on rows they leave pointing at nothing, not on rows already so.

    Django's SQLite schema editor checks every table's foreign keys at the end of each migration: after a
    committed drop left rows pointing at a gone table, every reverse migration, even a state-only one, failed
    on those rows, so `--resume-restore` could never finish and the marker stayed until `--from-snapshot`."""
    if connection.vendor != "sqlite":
        yield
        return
    before = _orphans(connection)

    def check(table_names: list[str] | None = None) -> None:
        new = sorted(_orphans(connection, table_names) - before)
        if new:
            table, rowid, parent = new[0]
            raise IntegrityError(f"row {rowid} of {table} points at a missing {parent} row")

    connection.__dict__["check_constraints"] = check
    try:
        yield
    finally:
        connection.__dict__.pop("check_constraints", None)


def resume(
    connection: BaseDatabaseWrapper, *, from_snapshot: bool, log: Callable[[str], None]
) -> tuple[RunStatus, str | None]:
    """Finish the rollback of an interrupted migrate; return (status, snapshot path)."""
    data = read(connection) or read(connection, stopped_path(connection))
    if data is None:
        raise MigrateRefused("There is no interrupted migrate to roll back: no marker in the data folder.")
    from songsgen.db.migrate.online import leftovers as online_leftovers

    for item in online_leftovers.remove(connection):  # before a reverse operation rebuilds that table again
        log(item.done())
    snap = data.get("snapshot")
    before = _before(data)
    # A run that died before reaching the migration an earlier failure left half-applied: still half-applied.
    progress = Progress.from_dict(data.get("partial")) or resume_point(connection)
    if from_snapshot or before is None:
        if not snap:
            raise MigrateRefused("The interrupted migrate recorded no snapshot (--no-backup); nothing to put back.")
        log(f"Putting back {snap}, taken before the interrupted migrate; rows written since are discarded ...")
        try:
            snapshot.restore_snapshot(connection, Path(snap))
        except SnapshotError as exc:
            raise MigrateFailed(f"putting back {snap} failed: {exc}", restored=False) from exc
        status = RunStatus.SNAPSHOT_RESTORED
    else:
        try:
            with orphans_kept_out_of_the_way(connection):
                undo = undo_run(connection, before, log, progress, lambda p: record_progress(connection, p))
        except UndoFailed as exc:
            raise MigrateFailed(snapshot_advice(snap, str(exc)), restored=False) from exc
        if undo.stays:
            write_stopped(connection, snap, before, undo, str(data.get("error") or "interrupted"))
            raise MigrateFailed(stopped_advice(undo, snap), restored=False)
        done = undo.reversed + undo.unapplied + undo.reapplied
        log(f"Undid {'; '.join(done)} by reverse operations." if done else "The interrupted migrate had "
            "committed nothing.")
        if undo.unfinished:
            log(f"Not undone: what {undo.unfinished} wrote before the process died (it runs outside a "
                "transaction; a batched backfill continues from there).")
        status = RunStatus.RESUME_RESTORED
    problems = [p for p in schema.integrity_problems(connection) if p.blocking]
    if problems:
        clear(connection)  # the dead run is finished: what stays wrong is reported, not a reason to refuse
        raise MigrateFailed(
            f"the interrupted migrate's migrations are unapplied, but {len(problems)} problem(s) remain that "
            f"reverse operations cannot mend, first: {problems[0]}. "
            + snapshot_advice(snap, "rows it dropped cannot be re-created by reverse operations"),
            restored=False,
        )
    log("The database is back as it was before the interrupted migrate"
        + ("." if status == RunStatus.SNAPSHOT_RESTORED else "; rows written since are kept."))
    path(connection).unlink(missing_ok=True)
    stopped_path(connection).unlink(missing_ok=True)
    return status, snap
