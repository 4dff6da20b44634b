"""`manage.py dbbackup` and `backupcheck` end to end: real processes, real files, writers and SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from django.db import connection

from songsgen.db.backup import TEMP_PREFIX, AtomicFileSystemStorage, list_backups
from tests.conftest import REPO
from tests.db.backup.helpers import (
    add_songs,
    back_up,
    backups,
    integrity,
    label,
    live_path,
    open_backup,
    sqlite_only,
)
from tests.factories import make_user

# --- dbbackup -------------------------------------------------------------------------------------


WRITER = textwrap.dedent(
    """
    import os, sys, django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
    django.setup()
    from django.db import transaction
    from accounts.models import User
    from songs.models import Song
    stop, per = sys.argv[1], int(sys.argv[2])
    i = 0
    while not os.path.exists(stop):
        with transaction.atomic():  # one batch: a user and `per` songs, all or nothing
            user = User.objects.create_user(username=f"batch-{i}", email=f"batch-{i}@example.com")
            Song.objects.bulk_create([Song(user=user, title=f"batch-{i}-{k}", genre="rock") for k in range(per)])
        i += 1
    print(i)
    """
)


def _batches(path: Path) -> dict[int, int]:
    """Songs per writer batch in the database at `path` (batches with a user but no songs count 0)."""
    conn = sqlite3.connect(path)
    try:
        users = [int(r[0].split("-")[1]) for r in conn.execute(
            "SELECT username FROM accounts_user WHERE username LIKE 'batch-%'")]
        counts = {u: 0 for u in users}
        for (title,) in conn.execute("SELECT title FROM songs_song WHERE title LIKE 'batch-%'"):
            counts[int(title.split("-")[1])] = counts.get(int(title.split("-")[1]), 0) + 1
        return counts
    finally:
        conn.close()


@sqlite_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_backup_under_concurrent_writes_is_consistent(attempt, run, env, backup_dir, tmp_path):
    add_songs(6000, prefix="base", lyrics_kb=4)  # ~25 MB: the snapshot takes long enough to overlap writes
    per = 5
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(stop), str(per)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(_batches(live_path())) < 20:  # the writer is under way
            assert writer.poll() is None and time.monotonic() < deadline, writer.stderr.read()
            time.sleep(0.05)
        before = _batches(live_path())  # committed before the backup begins
        result = run("dbbackup")
        during = _batches(live_path())
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert result.returncode == 0, result.stderr
    assert len(during) > len(before), "the writer made no progress while the backup ran"

    (name,) = backups(backup_dir)
    copy = open_backup(backup_dir / name, tmp_path)
    assert integrity(copy) == "ok"
    restored = _batches(copy)
    assert set(before) <= set(restored), "a batch committed before the backup began is missing"
    assert all(count == per for count in restored.values()), f"partial transaction in the backup: {restored}"
    assert len(restored) <= int(out)


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_backup_files_are_owner_only_and_named_with_database_and_utc_time(run, backup_dir):
    add_songs(50, prefix="m")
    started = time.time()
    back_up(run)
    (name,) = backups(backup_dir)
    assert name.startswith(f"{label()}-") and name.endswith(".sqlite3.zst")
    (created,) = [b.created for b in list_backups([name], label())]
    assert abs(created.timestamp() - started) < 60  # the name holds UTC time, not local time
    assert (backup_dir / name).stat().st_mode & 0o777 == 0o600
    assert (backup_dir / f"{name}.metadata").stat().st_mode & 0o777 == 0o600
    assert backup_dir.stat().st_mode & 0o777 == 0o700
    assert not [n for n in os.listdir(backup_dir) if n.startswith(TEMP_PREFIX)]
    with open(backup_dir / name, "rb") as fh:
        assert fh.read(4) == b"\x28\xb5\x2f\xfd"  # zstd


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_clean_keeps_exactly_n_newest_and_never_the_new_one(run, backup_dir):
    add_songs(20, prefix="r")
    backup_dir.mkdir(mode=0o700)
    # Another database's backup and a stray file: not ours to delete.
    (backup_dir / "otherdb-2001-01-01T000000Z.sqlite3.zst").write_bytes(b"x")
    (backup_dir / "notes.txt").write_text("keep me")
    made = []
    for _ in range(5):
        result = run("dbbackup", "--clean", extra={"SONGSGEN_BACKUP_KEEP": "3"})
        assert result.returncode == 0, result.stderr
        made.append(backups(backup_dir)[0])
    assert len(set(made)) == 5
    assert backups(backup_dir) == sorted(made, reverse=True)[:3]
    metadata = sorted(n for n in os.listdir(backup_dir) if n.endswith(".metadata"))
    assert metadata == sorted(f"{n}.metadata" for n in made[-3:])
    assert (backup_dir / "otherdb-2001-01-01T000000Z.sqlite3.zst").exists()
    assert (backup_dir / "notes.txt").exists()

    # A backup whose name lies in the future sorts first; the one just made must survive anyway.
    future = f"{label()}-2999-01-01T000000Z.sqlite3.zst"
    (backup_dir / future).write_bytes(b"x")
    result = run("dbbackup", "--clean", extra={"SONGSGEN_BACKUP_KEEP": "1"})
    assert result.returncode == 0, result.stderr
    (kept,) = backups(backup_dir)
    assert kept not in made and kept != future
    assert integrity(open_backup(backup_dir / kept, backup_dir.parent)) == "ok"


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_backup_leaves_no_finished_looking_file(run, env, backup_dir, tmp_path):
    add_songs(6000, prefix="k", lyrics_kb=4)
    backup_dir.mkdir(mode=0o700)
    proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "dbbackup"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not [n for n in os.listdir(backup_dir) if n.startswith(TEMP_PREFIX)]:  # the snapshot is being written
        assert proc.poll() is None and time.monotonic() < deadline, "backup ended before it could be killed"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = os.listdir(backup_dir)
    assert left and all(n.startswith(TEMP_PREFIX) for n in left), left
    assert backups(backup_dir) == []

    # The next backup removes what the dead process left and writes a whole one.
    back_up(run)
    assert not [n for n in os.listdir(backup_dir) if n.startswith(TEMP_PREFIX)]
    (name,) = backups(backup_dir)
    assert integrity(open_backup(backup_dir / name, tmp_path)) == "ok"


SLOW_STORE = textwrap.dedent(
    """
    import os, sys, django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
    django.setup()
    from songsgen.db.backup import AtomicFileSystemStorage
    storage = AtomicFileSystemStorage(location=sys.argv[1], file_permissions_mode=0o600)
    storage.save("songs-2030-01-01T000000Z.sqlite3.zst", sys.stdin.buffer)  # stdin: a pipe fed slowly
    """
)


@pytest.mark.django_db(transaction=True)
def test_sigkill_while_storing_leaves_no_finished_looking_file(env, backup_dir):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_STORE, str(backup_dir)], env=env, stdin=subprocess.PIPE)
    proc.stdin.write(os.urandom(1 << 20))
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not (backup_dir.exists() and os.listdir(backup_dir)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdin.close()
    left = os.listdir(backup_dir)
    assert left and all(n.startswith(TEMP_PREFIX) for n in left), left

    # And a storage that is not killed puts the same name in place, whole and owner-only.
    storage = AtomicFileSystemStorage(location=str(backup_dir), file_permissions_mode=0o600)
    data = os.urandom(300_000)
    from django.core.files.base import ContentFile

    name = storage.save("songs-2030-01-01T000000Z.sqlite3.zst", ContentFile(data))
    assert (backup_dir / name).read_bytes() == data
    assert (backup_dir / name).stat().st_mode & 0o777 == 0o600


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_backup_failure_is_a_clear_error_with_nonzero_exit(run, tmp_path):
    add_songs(5, prefix="e")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run("dbbackup", extra={"SONGSGEN_BACKUP_DIR": str(blocker / "backups")})
    assert result.returncode != 0
    assert "CommandError: Backup failed:" in result.stderr and "Not a directory" in result.stderr
    assert "AttributeError" not in result.stderr and "Traceback" not in result.stderr


# --- backupcheck ----------------------------------------------------------------------------------


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_backupcheck_reports_a_good_backup_and_fails_a_damaged_one(run, backup_dir):
    from songs.models import Song

    add_songs(300, prefix="c")
    back_up(run)
    (name,) = backups(backup_dir)

    result = run("backupcheck", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["name"] == name and report["format"] == "zstd"
    assert report["tables"]["songs_song"] == Song.objects.count()
    assert report["size"] == (backup_dir / name).stat().st_size
    assert 0 <= report["age_seconds"] < 600

    quiet = run("backupcheck")  # cron's line: nothing printed when all is well
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    text = run("backupcheck", "-v2")
    assert text.returncode == 0 and "Check:    ok" in text.stdout and "songs_song" in text.stdout

    data = bytearray((backup_dir / name).read_bytes())
    middle = len(data) // 2
    data[middle: middle + 32] = bytes(b ^ 0x55 for b in data[middle: middle + 32])
    (backup_dir / name).write_bytes(bytes(data))
    result = run("backupcheck", "--json")
    assert result.returncode != 0
    assert json.loads(result.stdout)["ok"] is False
    assert f"Backup {name} is NOT usable" in result.stderr


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_backupcheck_fails_without_a_backup_or_when_too_old(run, backup_dir):
    add_songs(5, prefix="o")
    result = run("backupcheck")
    assert result.returncode != 0 and "No backup of database" in result.stderr
    assert run("dbbackup").returncode == 0
    time.sleep(1.5)
    result = run("backupcheck", "--max-age", "0.0003")  # about one second
    assert result.returncode != 0 and "older than 0.0003 hours" in result.stderr
    assert run("backupcheck", "--max-age", "24").returncode == 0
    bad = run("backupcheck", "--max-age", "soon")
    assert bad.returncode != 0 and "is not a number of hours" in bad.stderr


# --- PostgreSQL -----------------------------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL leg")
@pytest.mark.django_db(transaction=True)
def test_postgres_backup_is_a_pg_dump_and_sqlite_commands_refuse(run, backup_dir):
    if not shutil.which("pg_dump"):
        pytest.skip("pg_dump is not installed")
    make_user()
    result = run("dbbackup", "--clean")
    assert result.returncode == 0, result.stderr
    (name,) = backups(backup_dir)
    assert name.endswith(".psql.bin")
    assert (backup_dir / name).read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert (backup_dir / name).stat().st_mode & 0o777 == 0o600
    result = run("backupcheck")
    assert result.returncode != 0 and "backupcheck restores SQLite backups" in result.stderr
