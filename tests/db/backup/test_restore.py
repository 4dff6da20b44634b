"""The safe restore in this process (songsgen/db/backup/restore.py), its failures made to happen on cue
through `RestoreSteps`; the backups it restores are made by `manage.py dbbackup`."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from django.db import connection

from songsgen.db.backup import TEMP_PREFIX, RestoreSteps, remove_file, restore_sqlite
from songsgen.db.exceptions import BackupError, RestoreUndone, RestoreUnverified
from songsgen.db.problems import Problem
from tests.db.backup.helpers import (
    add_songs,
    back_up,
    backups,
    damage_pages,
    damaged_backup,
    integrity,
    live_path,
    open_backup,
    sqlite_only,
    table_checksums,
    truncate_wal,
    wal_size,
)

REAL = RestoreSteps()  # the steps as a restore runs them


@sqlite_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sound", [True, False])
def test_restore_copies_in_many_steps_beside_the_check_and_commits_only_a_sound_backup(
    sound, run, backup_dir, tmp_path
):
    """The backup's integrity_check runs while its pages are copied into the live database; until it has
    passed, every other connection sees the old database, and a backup that fails it is rolled back."""
    add_songs(2000, prefix="s", lyrics_kb=2)
    back_up(run)
    plain = open_backup(backup_dir / backups(backup_dir)[0], tmp_path)
    expected = table_checksums(plain)
    if not sound:
        damage_pages(plain)
    add_songs(300, prefix="later")
    live = live_path()
    before = table_checksums(live)
    truncate_wal(live)  # the WAL grows by the copy only
    seen: list[dict[str, str]] = []

    def slow_check(path: Path) -> None:
        deadline = time.monotonic() + 30
        while wal_size(live) < plain.stat().st_size // 2:  # the copy is well under way
            assert time.monotonic() < deadline, "the copy did not run beside the check"
            time.sleep(0.01)
        seen.append(table_checksums(live))  # what another connection sees meanwhile
        REAL.integrity_check(path)

    steps = RestoreSteps(step=64 * 1024, integrity_check=slow_check)  # a hundred steps or so
    with open(plain, "rb") as stream:
        if sound:
            result = restore_sqlite(stream, live, timeout=10, steps=steps)
            assert table_checksums(live) == expected
            assert result.tables["songs_song"] == 2000
        else:
            with pytest.raises(BackupError, match="fails PRAGMA integrity_check"):
                restore_sqlite(stream, live, timeout=10, steps=steps)
            assert table_checksums(live) == before
            assert wal_size(live) < 2**20  # the rolled-back pages do not stay in the WAL
    assert seen == [before]
    assert integrity(live) == "ok"
    assert not list(live.parent.glob(f"{live.name}.pre-restore-*"))
    assert not list(live.parent.glob(f"{TEMP_PREFIX}*"))


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_whose_copy_fails_before_the_commit_keeps_what_was_written_since_the_safety_copy(run, backup_dir):
    """A failure before the commit is a refusal: the live database, rolled back to itself, is not replaced by
    the older safety copy."""
    add_songs(200, prefix="backed-up")
    back_up(run)
    live = live_path()

    def safety_copy_then_a_write(*args, **kwargs) -> None:
        REAL.safety_copy(*args, **kwargs)
        conn = sqlite3.connect(live, timeout=10)
        with conn:  # the application writes after the safety copy was taken
            conn.execute("UPDATE accounts_user SET first_name = 'after-the-safety-copy'")
        conn.close()

    def failing_counts(path: Path) -> dict[str, int]:
        raise sqlite3.OperationalError("disk I/O error")

    steps = RestoreSteps(safety_copy=safety_copy_then_a_write, count_rows=failing_counts)
    connection.close()
    with open(backup_dir / backups(backup_dir)[0], "rb") as stream, pytest.raises(BackupError) as refused:
        restore_sqlite(stream, live, timeout=10, steps=steps)

    assert type(refused.value) is BackupError and "rolled back" in str(refused.value)
    names = sqlite3.connect(live).execute("SELECT DISTINCT first_name FROM accounts_user").fetchall()
    assert names == [("after-the-safety-copy",)]
    assert integrity(live) == "ok"
    assert not list(live.parent.glob(f"{live.name}.pre-restore-*"))
    assert not list(live.parent.glob(f"{TEMP_PREFIX}*"))


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_onto_a_missing_file(run, backup_dir, tmp_path):
    """Restores; a refused backup leaves no file behind; a result that fails its check says it is in place."""
    add_songs(100, prefix="m")
    back_up(run)
    stored = backup_dir / backups(backup_dir)[0]
    expected = table_checksums(open_backup(stored, tmp_path))
    target = tmp_path / "new" / "songs.db"

    with open(stored, "rb") as stream:
        restore_sqlite(stream, target, timeout=10)
    assert table_checksums(target) == expected and integrity(target) == "ok"
    assert sqlite3.connect(target).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    remove_file(target)
    corrupt = damaged_backup(stored, tmp_path)
    with open(corrupt, "rb") as stream, pytest.raises(BackupError, match="integrity_check"):
        restore_sqlite(stream, target, timeout=10)
    assert not target.exists()

    steps = RestoreSteps(quick_check=lambda path: (
        [Problem("quick_check", str(path), "forced failure")] if Path(path) == target else REAL.quick_check(path)))
    with open(stored, "rb") as stream, pytest.raises(RestoreUnverified, match="forced failure"):
        restore_sqlite(stream, target, timeout=10, steps=steps)
    assert not list(target.parent.glob(f"{TEMP_PREFIX}*"))


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_whose_result_fails_its_check_is_undone_from_the_safety_copy(run, backup_dir):
    add_songs(200, prefix="backed-up")
    back_up(run)
    add_songs(50, prefix="after")  # the live database differs from the backup
    live = live_path()
    before = table_checksums(live)

    def failing_check(path: Path) -> list[Problem]:  # only the check of the result fails
        return [Problem("quick_check", str(path), "forced failure")] if Path(path) == live else REAL.quick_check(path)

    connection.close()
    stored = backup_dir / backups(backup_dir)[0]
    with open(stored, "rb") as stream, pytest.raises(RestoreUndone) as undone:
        restore_sqlite(stream, live, timeout=10, steps=RestoreSteps(quick_check=failing_check))

    assert "forced failure" in str(undone.value)
    assert table_checksums(live) == before and integrity(live) == "ok"
    (kept,) = live.parent.glob(f"{live.name}.pre-restore-*")  # kept, and named in the error
    assert str(kept) in str(undone.value)
    assert table_checksums(kept) == before and oct(kept.stat().st_mode & 0o777) == "0o600"
    remove_file(kept)
    assert not list(live.parent.glob(f"{TEMP_PREFIX}*"))
