"""Restoring an SQLite backup into the live database, which other processes keep open and write.

One write transaction, committed only after the backup's integrity check: no reader sees a half.
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from songsgen.db import history
from songsgen.db.atomicfile import remove_file, remove_stale_temp_files, temp_path
from songsgen.db.backup import codec, live, replica, safetycopies, verify
from songsgen.db.exceptions import BackupError, RestoreUndone, RestoreUnverified
from songsgen.db.problems import Problem, summary

Log = Callable[[str], None]


@dataclass
class RestoreResult:
    """What a restore did."""

    database: Path
    tables: dict[str, int]
    checkpointed: bool
    seconds: float
    lock_seconds: float = 0.0  # how long writers had to wait: the copy into the live database
    notes: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # migrations the code has and the backup lacks


@dataclass(frozen=True)
class RestoreSteps:
    """The replaceable steps of a restore, so that a test makes a failure or race happen on cue."""

    step: int = live.STEP  # bytes copied into the live database per backup-API step
    # (live, target, *, timeout): the live database, saved
    safety_copy: Callable[..., None] = live.safety_copy
    # of the unpacked backup, beside the copy; raises
    integrity_check: Callable[[Path], None] = verify.sound
    # of the unpacked backup, once it is sound
    count_rows: Callable[[Path], dict[str, int]] = verify.row_counts
    # of the result
    quick_check: Callable[[Path], list[Problem]] = functools.partial(verify.check_errors, quick=True)


def restore_sqlite(stream: IO[bytes], target: Path, *, timeout: float, log: Log = lambda _: None,
                   steps: RestoreSteps | None = None) -> RestoreResult:
    """Restore the backup in `stream` into the SQLite file `target`, in one checked transaction."""
    steps = steps or RestoreSteps()
    started = time.monotonic()
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    safety: Path | None = None
    existed = target.exists()
    if existed and target.stat().st_size > 0:
        need_space(folder, target.stat().st_size * 3)  # unpacked backup, safety copy, and the WAL
        safety = safetycopies.new_path(target)
        os.close(os.open(safety, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    keep_safety = False
    remove_stale_temp_files(folder)
    candidate = temp_path(folder, ".sqlite3")
    try:
        # The safety copy is taken while the backup is unpacked: it mostly waits on the disk.
        save = functools.partial(steps.safety_copy, target, safety, timeout=timeout) if safety else (lambda: None)
        with live.beside("threads:safety", save) as saved:
            codec.unpack(stream, candidate)
            verify.readable(candidate)
            verify.songsgen(candidate)
            pending = history.history_gap(verify.recorded_migrations(candidate) or set()).behind
            log(f"Backup unpacked: {candidate.stat().st_size / 2**20:.1f} MiB, a songsgen database.")
            if safety is not None:
                try:
                    saved.result()
                except (sqlite3.Error, OSError) as exc:
                    raise BackupError(f"the safety copy of the live database failed ({exc})") from exc
                log(f"Safety copy of the live database: {safety}")
        # the WAL holds every page of the backup until the checkpoint
        need_space(folder, candidate.stat().st_size)
        if safety is not None and (theirs := verify.page_size(candidate)) != (ours := verify.page_size(target)):
            raise BackupError(
                f"the backup's page size ({theirs}) differs from the live database's ({ours}), which a "
                "WAL database cannot change; stop the application and replace the file"
            )
        checkpointed, errors, expected, held = _copy_and_verify(candidate, target, timeout=timeout, steps=steps)
        if errors and safety is not None:
            keep_safety = True
            try:
                live.copy_into_live(safety, target, timeout=timeout)
            except (BackupError, sqlite3.Error, OSError) as exc:
                raise RestoreUnverified(
                    f"the restored database failed its check ({summary(errors)}), and putting the safety "
                    f"copy back failed too ({exc}): stop the application and put {safety} in place of {target}"
                ) from exc
            raise RestoreUndone(
                f"the restored database failed its check ({summary(errors)}); the live database "
                f"was put back from the safety copy, which is kept at {safety}"
            )
        if errors:
            raise RestoreUnverified(
                f"the restored database at {target} fails its check ({summary(errors)}), and there was no "
                "database before it to put back"
            )
    except BaseException:
        if not existed and target.exists() and target.stat().st_size == 0:
            remove_file(target)  # the empty file SQLite created for a copy that was rolled back
        raise
    finally:
        remove_file(candidate)
        if safety is not None and not keep_safety:
            remove_file(safety)
    notes = [] if checkpointed else ["another connection kept the WAL busy; SQLite folds it in later"]
    if left := safetycopies.leftovers(target):
        notes.append(safetycopies.summary(left))
    try:
        live.set_wal(target, timeout)
    except sqlite3.Error as exc:
        # the application's connections switch it themselves (`songsgen.db.sqlite`)
        notes.append(f"the restored database is not in WAL mode yet ({exc})")
    return RestoreResult(target, expected, checkpointed, time.monotonic() - started, held, notes, pending)


def _copy_and_verify(candidate: Path, target: Path, *, timeout: float,
                     steps: RestoreSteps) -> tuple[bool, list[Problem], dict[str, int], float]:
    """Check `candidate` while copying it into `target`; committed only if integrity_check passes.

    Returns whether the WAL was folded in, what is wrong with the result, the backup's row counts,
    and how long the copy held the write lock. A backup that fails its integrity_check, or a copy
    that fails before it commits, raises BackupError: the copy was rolled back, the live database
    is as it was.
    """
    replica.prepare_restore(candidate, target)
    wanted = verify.schema(candidate)
    counts: dict[str, int] = {}

    def check_backup() -> None:
        steps.integrity_check(candidate)
        counts.update(steps.count_rows(candidate))

    def check_result() -> list[Problem]:
        # quick_check, not integrity_check: SQLite copied the pages of a file that has just passed
        # integrity_check; what a copy can damage, page structure, quick_check sees in a third of
        # the time (docs/backups.md, "Restore"). Row counts cannot be compared: other processes may
        # already be writing into the restored database. The schema can.
        errors = steps.quick_check(target)
        if not errors and verify.schema(target) != wanted:
            errors = [Problem("schema", str(target), "its schema differs from the backup's")]
        return errors

    # The copy's last step, which commits, waits for the backup's check and is
    # rolled back if it fails.
    with live.beside("threads:check", check_backup) as checked:
        try:
            checkpointed, errors, held = live.copy_into_live(
                candidate, target, timeout=timeout, step=steps.step, before_commit=checked.result,
                alongside=check_result,
                # Its pages are in the live database now; the memory they held
                # takes the checkpoint's.
                after_commit=lambda: remove_file(candidate),
            )
        except (sqlite3.Error, OSError) as exc:
            # after the commit: what failed before it raised BackupError
            return False, [Problem("restore", str(target), str(exc))], counts, 0.0
    return checkpointed, errors, counts, held


def need_space(folder: Path, needed: int) -> None:
    """Raise BackupError unless `folder`'s file system has `needed` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise BackupError(
            f"Not enough free disk in {folder}: {free // 2**20} MiB free, about {needed // 2**20} MiB needed "
            "(the unpacked backup, a safety copy of the live database, and SQLite's WAL). Free some space first."
        )
