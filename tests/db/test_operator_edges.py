"""What an operator meets around restores and cron: one-line refusals, quiet success, leftovers named."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from django.db import connection

from songsgen.db.dblock import database_lock
from tests.factories import make_song, make_user

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="a SQLite file's safety copies")


@pytest.fixture
def backup_dir(tmp_path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def run(manage, subprocess_env, backup_dir):
    env = dict(subprocess_env, SONGSGEN_BACKUP_DIR=str(backup_dir))

    def go(*args: str) -> subprocess.CompletedProcess:
        return manage(*args, env=env)

    return go


def _state() -> tuple[int, str]:
    """Songs in the live database, and on SQLite the file's bytes: what a refused command must not change."""
    from songs.models import Song

    count = Song.objects.count()
    connection.close()
    digest = ""
    if connection.vendor == "sqlite":
        digest = hashlib.sha256(Path(connection.settings_dict["NAME"]).read_bytes()).hexdigest()
    return count, digest


def _one_line_refusal(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("flag,value,words", [
    ("-i", "/etc/passwd", ["outside the backup folder", "-I PATH"]),
    ("-i", "../../etc/passwd", ["outside the backup folder"]),
    ("-i", "songs-2020-01-01T000000Z.sqlite3.zst", ["no backup named", "listbackups"]),
    ("-I", "/nonexistent/songs.sqlite3.zst", ["no backup file at /nonexistent/songs.sqlite3.zst"]),
    ("-I", "/tmp", ["no backup file at /tmp"]),
])
def test_dbrestore_of_a_wrong_file_is_a_one_line_refusal_that_writes_nothing(run, backup_dir, flag, value, words):
    make_song(user=make_user(), title="kept")
    run("dbbackup")  # a real backup in the folder, so the folder exists and a default restore would work
    before = _state()
    result = run("dbrestore", "--noinput", flag, value)
    _one_line_refusal(result, "Restore refused", *words)
    assert _state() == before


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_backupcheck_of_a_name_outside_the_folder_is_a_one_line_refusal(run):
    make_song(user=make_user())
    run("dbbackup")
    _one_line_refusal(run("backupcheck", "-i", "/etc/passwd"), "outside the backup folder")


@pytest.mark.django_db(transaction=True)
def test_cron_commands_are_silent_on_success_and_talk_with_v2(run, backup_dir):
    make_song(user=make_user())
    for _ in range(3):  # --clean deletes old backups too: still nothing to say
        quiet = run("dbbackup", "--clean", "--noinput")
        assert quiet.returncode == 0 and (quiet.stdout, quiet.stderr) == ("", ""), quiet.stdout + quiet.stderr
    loud = run("dbbackup", "--clean", "--noinput", "-v2")
    assert loud.returncode == 0 and "Backup written:" in loud.stdout

    maintain = run("dbmaintain")
    assert maintain.returncode == 0 and (maintain.stdout, maintain.stderr) == ("", "")
    assert "running" in run("dbmaintain", "-v2").stdout
    if connection.vendor == "sqlite":  # backupcheck restores SQLite backups only
        check = run("backupcheck", "--max-age", "1")
        assert check.returncode == 0 and (check.stdout, check.stderr) == ("", "")


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_discarding_safety_copies_waits_for_a_running_restore(run, tmp_path):
    live = Path(connection.settings_dict["NAME"])
    leftover = live.with_name(f"{live.name}.pre-restore-20260101T000000Z")
    leftover.write_bytes(live.read_bytes())
    try:
        with database_lock(connection.settings_dict, purpose="dbrestore", wait=0):  # a restore under way
            refused = run("dbrestore", "--discard-safety-copies")
        _one_line_refusal(refused, "Refused", "holds the database")
        assert leftover.exists()
        done = run("dbrestore", "--discard-safety-copies")
        assert done.returncode == 0 and not leftover.exists()
    finally:
        leftover.unlink(missing_ok=True)

