"""`manage.py dbrestore` end to end: real processes on the live database, bad backups, SIGKILL, GPG."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from django.db import connection

from songsgen.db.backup import TEMP_PREFIX
from tests.conftest import REPO
from tests.db.backup.helpers import (
    add_songs,
    back_up,
    backups,
    damaged_backup,
    integrity,
    live_path,
    open_backup,
    sqlite_only,
    table_checksums,
    truncate_wal,
    wal_size,
    zstd,
)
from tests.factories import make_user

HOLDER = textwrap.dedent(
    """
    import os, sys, time, django
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
    django.setup()
    from django.db import connection, transaction
    from accounts.models import User
    from songs.models import Song
    stop, ready = sys.argv[1], sys.argv[2]
    user = User.objects.get(username=sys.argv[3])
    i = 0
    while not os.path.exists(stop):  # one connection, held open throughout, writing
        with transaction.atomic():
            Song.objects.create(user=user, title=f"holder-{i}", genre="jazz")
        i += 1
        if i == 20:
            open(ready, "w").close()
        time.sleep(0.002)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA integrity_check")
        print(cursor.fetchone()[0], i)
    """
)


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_while_another_process_writes(run, env, backup_dir, tmp_path):
    from songs.models import Song

    add_songs(3000, prefix="a", lyrics_kb=2)
    keeper = make_user(username="keeper")  # exists in the backup and afterwards: the holder writes as it
    back_up(run)
    (name,) = backups(backup_dir)
    expected = table_checksums(open_backup(backup_dir / name, tmp_path))

    # The live database moves on: rows added and deleted after the backup.
    add_songs(500, prefix="b")
    Song.objects.filter(title__startswith="a-1").delete()
    assert table_checksums(live_path()) != expected

    stop, ready = tmp_path / "stop", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(stop), str(ready), keeper.username], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.stderr.read()
            time.sleep(0.01)
        result = run("dbrestore", "--noinput")
        time.sleep(0.3)  # the holder goes on writing into the restored database
    finally:
        stop.touch()
        out, err = holder.communicate(timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Restored" in result.stdout
    assert holder.returncode == 0, err
    assert out.split()[0] == "ok"  # the holder's own connection sees an intact database
    assert integrity(live_path()) == "ok"

    # Exactly the backup's rows, plus only what the holder committed after the restore.
    Song.objects.filter(title__startswith="holder-").delete()
    assert table_checksums(live_path()) == expected
    assert not list(live_path().parent.glob(f"{live_path().name}.pre-restore-*"))  # safety copy removed
    assert not list(live_path().parent.glob(f"{TEMP_PREFIX}*"))


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_restore_leaves_the_old_database_or_the_new_one(run, env, backup_dir, tmp_path):
    add_songs(6000, prefix="k", lyrics_kb=4)  # ~25 MB
    back_up(run)
    expected = table_checksums(open_backup(backup_dir / backups(backup_dir)[0], tmp_path))
    add_songs(500, prefix="later")
    live = live_path()
    before = table_checksums(live)
    truncate_wal(live)  # the WAL grows by the copy only

    proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "dbrestore", "--noinput"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while wal_size(live) < 4 * 2**20:  # the copy into the live database is under way
        assert proc.poll() is None and time.monotonic() < deadline, "restore ended before it could be killed"
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert integrity(live) == "ok"  # opening it recovers the WAL: the copy's uncommitted pages are ignored
    assert table_checksums(live) in (before, expected)
    (kept,) = live.parent.glob(f"{live.name}.pre-restore-*")  # the safety copy stays, as the live one was
    assert table_checksums(kept) == before and oct(kept.stat().st_mode & 0o777) == "0o600"

    # dbcheck names the leftover with its size and the command that removes it.
    check = run("dbcheck", "--sizes")
    assert check.returncode == 0, check.stderr
    assert kept.name in check.stdout and "MiB safety copy" in check.stdout and "--discard-safety-copies" in check.stdout

    # The next restore removes the dead process's temporary files, restores, and names the safety copy.
    result = run("dbrestore", "--noinput")
    assert result.returncode == 0, result.stderr
    assert table_checksums(live) == expected
    assert not list(live.parent.glob(f"{TEMP_PREFIX}*"))
    assert kept.name in result.stdout and "--discard-safety-copies" in result.stdout and kept.exists()

    discarded = run("dbrestore", "--discard-safety-copies")
    assert discarded.returncode == 0, discarded.stderr
    assert f"Removed {kept.name}" in discarded.stdout and not kept.exists()
    assert table_checksums(live) == expected
    assert kept.name not in run("dbcheck", "--sizes").stdout


def _foreign_sqlite(tmp_path: Path, *, django_like: bool) -> bytes:
    path = tmp_path / f"foreign-{django_like}.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.executemany("INSERT INTO invoices (total) VALUES (?)", [(i * 1.5,) for i in range(100)])
    if django_like:  # another Django project: migrations recorded, but none of ours
        conn.execute("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, applied TEXT)")
        conn.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('shop', '0001_initial', '')")
    conn.commit()
    conn.close()
    return path.read_bytes()


@sqlite_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "kind", ["truncated", "random", "foreign-sqlite", "other-django-project", "damaged", "corrupt-pages"]
)
def test_restore_refuses_bad_backups_and_leaves_the_live_database_alone(kind, run, backup_dir, tmp_path):
    add_songs(2000, prefix="live", lyrics_kb=2)
    back_up(run)
    (name,) = backups(backup_dir)
    good = (backup_dir / name).read_bytes()
    bad = {
        "truncated": lambda: good[: len(good) // 2],
        "random": lambda: random.Random(7).randbytes(len(good)),
        "foreign-sqlite": lambda: zstd(_foreign_sqlite(tmp_path, django_like=False)),
        "other-django-project": lambda: zstd(_foreign_sqlite(tmp_path, django_like=True)),
        # flipped bytes in the middle: zstd's content checksum catches it
        "damaged": lambda: good[: len(good) // 2] + bytes(b ^ 0xFF for b in good[len(good) // 2: len(good) // 2 + 64])
        + good[len(good) // 2 + 64:],
        # a sound zstd frame of a songsgen database whose pages are damaged: integrity_check catches it
        "corrupt-pages": lambda: zstd(damaged_backup(backup_dir / name, tmp_path).read_bytes()),
    }[kind]()
    path = tmp_path / f"{kind}.sqlite3.zst"
    path.write_bytes(bad)
    before = table_checksums(live_path())
    wal_before = wal_size(live_path())

    result = run("dbrestore", "--noinput", "-I", str(path))

    assert result.returncode != 0
    assert "CommandError: Restore refused:" in result.stderr, result.stderr
    assert "The live database was not changed." in result.stderr
    reason = {"truncated": "truncated", "random": "not a backup", "foreign-sqlite": "no django_migrations",
              "other-django-project": "lacks this project's migrations", "damaged": "damaged",
              "corrupt-pages": "fails PRAGMA integrity_check"}[kind]
    assert reason in result.stderr
    assert table_checksums(live_path()) == before
    assert integrity(live_path()) == "ok"
    assert not list(live_path().parent.glob(f"{live_path().name}.pre-restore-*"))
    assert not list(live_path().parent.glob(f"{TEMP_PREFIX}*"))
    assert wal_size(live_path()) <= wal_before  # no pages of a rolled-back copy left in it


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_accepts_a_plain_sqlite_backup_of_this_database(run, backup_dir, tmp_path):
    """A backup made by django-dbbackup's own SQLite connector (an uncompressed file) restores too."""
    add_songs(100, prefix="plain")
    back_up(run)
    plain = open_backup(backup_dir / backups(backup_dir)[0], tmp_path)
    expected = table_checksums(plain)
    add_songs(10, prefix="later")
    result = run("dbrestore", "--noinput", "-I", str(plain))
    assert result.returncode == 0, result.stderr
    assert table_checksums(live_path()) == expected


# --- GPG ------------------------------------------------------------------------------------------


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_encrypted_backup_restores_with_the_key(run, backup_dir, gnupg_home, tmp_path):
    add_songs(200, prefix="g")
    gpg = {"GNUPGHOME": str(gnupg_home), "SONGSGEN_BACKUP_GPG_RECIPIENT": "backups@songsgen.invalid"}
    result = run("dbbackup", "--encrypt", extra=gpg)
    assert result.returncode == 0, result.stderr
    (name,) = backups(backup_dir)
    assert name.endswith(".sqlite3.zst.gpg")
    assert (backup_dir / name).stat().st_mode & 0o777 == 0o600
    assert b"\x28\xb5\x2f\xfd" not in (backup_dir / name).read_bytes()[:64]
    expected = table_checksums(live_path())

    assert run("backupcheck", "--decrypt", "--passphrase", "test-pass", extra=gpg).returncode == 0
    add_songs(10, prefix="after")
    result = run("dbrestore", "--noinput", "--decrypt", "--passphrase", "test-pass", extra=gpg)
    assert result.returncode == 0, result.stderr
    assert table_checksums(live_path()) == expected


# --- PostgreSQL -----------------------------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL leg")
@pytest.mark.django_db(transaction=True)
def test_postgres_restore_is_exact_and_refuses_foreign_files(run, backup_dir, tmp_path):
    from songs.models import Song
    from tests.db.dbstate import database_state
    from tests.factories import make_song

    user = make_user(username="kept")
    for i in range(50):
        make_song(user=user, title=f"kept {i}")
    assert run("dbbackup").returncode == 0
    (name,) = backups(backup_dir)
    connection.close()
    before = database_state(connection)

    # The database moves on: rows changed and deleted, and a table the backup never held.
    Song.objects.filter(title__startswith="kept 1").delete()
    Song.objects.update(play_count=99)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE made_after_the_backup (id int)")
    connection.close()
    moved_on = database_state(connection)
    assert moved_on != before

    junk = tmp_path / "junk.psql.bin"
    junk.write_bytes(random.Random(3).randbytes(4096))
    refused = run("dbrestore", "--noinput", "-I", str(junk))
    assert refused.returncode != 0 and "pg_dump archive" in refused.stderr
    connection.close()
    assert database_state(connection) == moved_on  # untouched

    restored = run("dbrestore", "--noinput", "-i", name)
    assert restored.returncode == 0, restored.stderr
    connection.close()
    assert database_state(connection) == before
