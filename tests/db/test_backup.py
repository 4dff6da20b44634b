"""Backups and restores with real files and real processes (songsgen/db/backup.py and its commands)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import zstandard
from django.db import connection

from songsgen.db import backup as backup_module
from songsgen.db.backup import TEMP_PREFIX, AtomicFileSystemStorage, database_label, list_backups, unpack
from tests.conftest import REPO
from tests.factories import make_user

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="SQLite snapshot and restore; PostgreSQL backups run pg_dump"
)


# --- helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def backup_dir(tmp_path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def env(subprocess_env, backup_dir) -> dict[str, str]:
    """A manage.py environment on the test database, with backups in a folder of this test's own."""
    return dict(subprocess_env, SONGSGEN_BACKUP_DIR=str(backup_dir), SONGSGEN_BACKUP_KEEP="7")


@pytest.fixture
def run(manage, env):
    def go(*args: str, extra: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
        return manage(*args, env=dict(env, **(extra or {})), **kwargs)

    return go


def back_up(run) -> None:
    """`manage.py dbbackup`, which must succeed."""
    result = run("dbbackup")
    assert result.returncode == 0, result.stderr


def live_path() -> Path:
    return Path(connection.settings_dict["NAME"])


def label() -> str:
    return database_label(connection.settings_dict)


def backups(folder: Path) -> list[str]:
    """Finished-looking backups of the test database in `folder`, newest first."""
    names = os.listdir(folder) if folder.exists() else []
    return [b.name for b in list_backups(names, label())]


def table_checksums(path: Path) -> dict[str, str]:
    """A digest of every row of every table of the SQLite file at `path`."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        # Ordinary tables only: a full-text index's shadow tables hold its internal layout, which
        # differs after the same rows were added and removed; its content is the songs table's.
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: hashlib.sha256(repr(conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall()).encode())
                .hexdigest() for t in tables}
    finally:
        conn.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return ",".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def open_backup(path: Path, tmp_path: Path) -> Path:
    """Unpack a backup file into a plain SQLite file for inspection."""
    target = tmp_path / f"unpacked-{path.name}.sqlite3"
    with open(path, "rb") as stream:
        unpack(stream, target)
    return target


def add_songs(n: int, *, prefix: str, lyrics_kb: int = 1) -> None:
    """n songs with sizeable lyrics, written fast (bulk), committed."""
    from songs.models import Song

    user = make_user()
    rng = random.Random(n)
    words = ["love", "night", "river", "fire", "echo", "rain", "dream", "city", "heart", "sky"]
    Song.objects.bulk_create(
        [Song(user=user, title=f"{prefix}-{i}", genre="pop",
              lyrics=" ".join(rng.choice(words) for _ in range(lyrics_kb * 180))) for i in range(n)],
        batch_size=2000,
    )


# --- backup ---------------------------------------------------------------------------------------

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


FROZEN_WRITER = textwrap.dedent(
    """
    import sqlite3, sys
    for i in range(30):  # a new connection each time: closing the last one tries a checkpoint too
        conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t (body) VALUES (?)", [("z" * 500,)] * 50)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        conn.close()
    """
)


def _frames_past_the_file(live: Path, *, reader_pins_the_wal: bool) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """A WAL database of 2,100 rows, the last 100 committed in frames no checkpoint has copied into the file
    yet; with a reader whose older read transaction keeps them out if `reader_pins_the_wal`. (writer, reader)"""
    writer = sqlite3.connect(live, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    with writer:
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO t (body) VALUES (?)", [("x" * 500,)] * 2000)
    reader = sqlite3.connect(live, isolation_level=None)
    if reader_pins_the_wal:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM t").fetchone()
    with writer:
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO t (body) VALUES (?)", [("y" * 500,)] * 100)
    assert Path(f"{live}-wal").stat().st_size > 0
    return writer, reader


@pytest.fixture
def api_copies(monkeypatch) -> list[tuple]:
    """The backup-API copies (songsgen.db.backup.snapshot) made while the test runs, by their arguments."""
    copies, real_snapshot = [], backup_module.snapshot

    def spied_snapshot(*args, **kwargs) -> None:
        copies.append(args)
        real_snapshot(*args, **kwargs)

    monkeypatch.setattr(backup_module, "snapshot", spied_snapshot)
    return copies


def _truncate_wal(live: Path) -> None:
    """Empty the WAL, so that it grows by what the test does next only."""
    connection.close()
    conn = sqlite3.connect(live, isolation_level=None)
    try:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        conn.close()


@pytest.mark.parametrize("obstacle", [None, "a reader pins the WAL", "a writer holds the lock"])
def test_frozen_file_holds_the_database_file_still_while_another_process_writes(obstacle, tmp_path, monkeypatch):
    """Or gives way (None) when it cannot: the callers then take a backup-API copy."""
    live = tmp_path / "live.db"
    writer, reader = _frames_past_the_file(live, reader_pins_the_wal=obstacle == "a reader pins the WAL")
    if obstacle == "a writer holds the lock":
        monkeypatch.setattr(backup_module, "LOCK_WAIT", 0.2)
        writer.execute("BEGIN IMMEDIATE")

    with backup_module.frozen_file(live, timeout=5) as frozen:
        if obstacle:
            assert frozen is None
        else:
            before = os.pread(frozen.fd, frozen.size, 0)
            subprocess.run([sys.executable, "-c", FROZEN_WRITER, str(live)], check=True, timeout=60)
            assert os.pread(frozen.fd, frozen.size, 0) == before  # not a byte changed while others wrote
            assert frozen.reader.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2100

    if writer.in_transaction:
        writer.execute("ROLLBACK")
    if not obstacle:  # those bytes alone are the database as of the instant frozen_file began
        copy = tmp_path / "copy.db"
        copy.write_bytes(before)
        assert integrity(copy) == "ok"
        assert sqlite3.connect(copy).execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2100
        assert sqlite3.connect(live).execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2100 + 30 * 50
    reader.close()
    writer.close()


@sqlite_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("reader_pins_the_wal", [False, True])
def test_backup_is_packed_from_the_held_file_or_a_backup_api_copy(reader_pins_the_wal, settings, tmp_path,
                                                                   api_copies):
    """Straight from the database file when frozen_file() can hold it; else from a backup-API copy."""
    add_songs(500, prefix="p")
    live = live_path()
    reader = sqlite3.connect(live, isolation_level=None)
    if reader_pins_the_wal:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM songs_song").fetchone()
    add_songs(100, prefix="q")  # committed past the reader's state
    expected = table_checksums(live)
    settings.BACKUP_DIR = tmp_path / "work"

    dump = backup_module.SqliteBackupConnector("default").create_dump()

    copy = tmp_path / "copy.sqlite3"
    with dump:
        assert unpack(dump, copy) == "zstd"
    assert len(api_copies) == int(reader_pins_the_wal)
    assert integrity(copy) == "ok"
    assert table_checksums(copy) == expected
    assert not list((tmp_path / "work").glob(f"{TEMP_PREFIX}*"))  # no copy or packed file left behind
    reader.close()


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


# --- restore --------------------------------------------------------------------------------------

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
    _truncate_wal(live)  # the WAL grows by the copy only

    proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "dbrestore", "--noinput"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _wal_size(live) < 4 * 2**20:  # the copy into the live database is under way
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


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _damage_pages(path: Path) -> None:
    """Overwrite pages in the middle of the SQLite file at `path`: it still opens, and is still a songsgen
    database, but fails integrity_check."""
    size = backup_module.page_size(path)
    conn = sqlite3.connect(path)
    try:  # leaf pages of the songs table (a free page's content is never checked)
        leaves = [r[0] for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'songs_song' AND pagetype = 'leaf' ORDER BY pageno")]
    finally:
        conn.close()
    with open(path, "r+b") as f:
        for page in leaves[len(leaves) // 2: len(leaves) // 2 + 8]:
            f.seek((page - 1) * size + 16)
            f.write(b"\xab" * (size - 32))
    assert integrity(path) != "ok" and backup_module.songsgen_errors(path) == []


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
        "foreign-sqlite": lambda: _zstd(_foreign_sqlite(tmp_path, django_like=False)),
        "other-django-project": lambda: _zstd(_foreign_sqlite(tmp_path, django_like=True)),
        # flipped bytes in the middle: zstd's content checksum catches it
        "damaged": lambda: good[: len(good) // 2] + bytes(b ^ 0xFF for b in good[len(good) // 2: len(good) // 2 + 64])
        + good[len(good) // 2 + 64:],
        # a sound zstd frame of a songsgen database whose pages are damaged: integrity_check catches it
        "corrupt-pages": lambda: _zstd(_damaged_backup(backup_dir / name, tmp_path).read_bytes()),
    }[kind]()
    path = tmp_path / f"{kind}.sqlite3.zst"
    path.write_bytes(bad)
    before = table_checksums(live_path())
    wal_before = _wal_size(live_path())

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
    assert _wal_size(live_path()) <= wal_before  # no pages of a rolled-back copy left in it


def _wal_size(live: Path) -> int:
    wal = Path(f"{live}-wal")
    return wal.stat().st_size if wal.exists() else 0


def _damaged_backup(stored: Path, tmp_path: Path) -> Path:
    plain = open_backup(stored, tmp_path)
    _damage_pages(plain)
    return plain


@sqlite_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sound", [True, False])
def test_restore_copies_in_many_steps_beside_the_check_and_commits_only_a_sound_backup(
    sound, run, backup_dir, tmp_path, monkeypatch
):
    """The backup's integrity_check runs while its pages are copied into the live database; until it has
    passed, every other connection sees the old database, and a backup that fails it is rolled back."""
    add_songs(2000, prefix="s", lyrics_kb=2)
    back_up(run)
    plain = open_backup(backup_dir / backups(backup_dir)[0], tmp_path)
    expected = table_checksums(plain)
    if not sound:
        _damage_pages(plain)
    add_songs(300, prefix="later")
    live = live_path()
    before = table_checksums(live)
    monkeypatch.setattr(backup_module, "STEP", 64 * 1024)  # a hundred steps or so
    _truncate_wal(live)  # the WAL grows by the copy only
    seen: list[dict[str, str]] = []
    real_sound = backup_module._sound

    def slow_check(path: Path) -> None:
        deadline = time.monotonic() + 30
        while _wal_size(live) < plain.stat().st_size // 2:  # the copy is well under way
            assert time.monotonic() < deadline, "the copy did not run beside the check"
            time.sleep(0.01)
        seen.append(table_checksums(live))  # what another connection sees meanwhile
        real_sound(path)

    monkeypatch.setattr(backup_module, "_sound", slow_check)
    with open(plain, "rb") as stream:
        if sound:
            result = backup_module.restore_sqlite(stream, live, timeout=10)
            assert table_checksums(live) == expected
            assert result.tables["songs_song"] == 2000
        else:
            with pytest.raises(backup_module.BackupError, match="fails PRAGMA integrity_check"):
                backup_module.restore_sqlite(stream, live, timeout=10)
            assert table_checksums(live) == before
            assert _wal_size(live) < 2**20  # the rolled-back pages do not stay in the WAL
    assert seen == [before]
    assert integrity(live) == "ok"
    assert not list(live.parent.glob(f"{live.name}.pre-restore-*"))
    assert not list(live.parent.glob(f"{TEMP_PREFIX}*"))


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_whose_copy_fails_before_the_commit_keeps_what_was_written_since_the_safety_copy(
    run, backup_dir, monkeypatch
):
    """A failure before the commit is a refusal: the live database, rolled back to itself, is not replaced by
    the older safety copy."""
    add_songs(200, prefix="backed-up")
    back_up(run)
    live = live_path()
    real_safety_copy = backup_module.safety_copy

    def safety_copy_then_a_write(*args, **kwargs) -> None:
        real_safety_copy(*args, **kwargs)
        conn = sqlite3.connect(live, timeout=10)
        with conn:  # the application writes after the safety copy was taken
            conn.execute("UPDATE accounts_user SET first_name = 'after-the-safety-copy'")
        conn.close()

    def failing_counts(path: Path) -> dict[str, int]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(backup_module, "safety_copy", safety_copy_then_a_write)
    monkeypatch.setattr(backup_module, "row_counts", failing_counts)
    connection.close()
    with open(backup_dir / backups(backup_dir)[0], "rb") as stream, pytest.raises(backup_module.BackupError) as refused:
        backup_module.restore_sqlite(stream, live, timeout=10)

    assert type(refused.value) is backup_module.BackupError and "rolled back" in str(refused.value)
    names = sqlite3.connect(live).execute("SELECT DISTINCT first_name FROM accounts_user").fetchall()
    assert names == [("after-the-safety-copy",)]
    assert integrity(live) == "ok"
    assert not list(live.parent.glob(f"{live.name}.pre-restore-*"))
    assert not list(live.parent.glob(f"{TEMP_PREFIX}*"))


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_onto_a_missing_file(run, backup_dir, tmp_path, monkeypatch):
    """Restores; a refused backup leaves no file behind; a result that fails its check says it is in place."""
    add_songs(100, prefix="m")
    back_up(run)
    stored = backup_dir / backups(backup_dir)[0]
    expected = table_checksums(open_backup(stored, tmp_path))
    target = tmp_path / "new" / "songs.db"

    with open(stored, "rb") as stream:
        backup_module.restore_sqlite(stream, target, timeout=10)
    assert table_checksums(target) == expected and integrity(target) == "ok"
    assert sqlite3.connect(target).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    backup_module.remove_file(target)
    corrupt = _damaged_backup(stored, tmp_path)
    with open(corrupt, "rb") as stream, pytest.raises(backup_module.BackupError, match="integrity_check"):
        backup_module.restore_sqlite(stream, target, timeout=10)
    assert not target.exists()

    real_check = backup_module.check_errors
    monkeypatch.setattr(backup_module, "check_errors", lambda path, *, quick=False: (
        ["forced failure"] if quick and Path(path) == target else real_check(path, quick=quick)))
    with open(stored, "rb") as stream, pytest.raises(backup_module.RestoreUnverified, match="forced failure"):
        backup_module.restore_sqlite(stream, target, timeout=10)
    assert not list(target.parent.glob(f"{TEMP_PREFIX}*"))


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


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_whose_result_fails_its_check_is_undone_from_the_safety_copy(run, backup_dir, monkeypatch):
    add_songs(200, prefix="backed-up")
    back_up(run)
    add_songs(50, prefix="after")  # the live database differs from the backup
    live = live_path()
    before = table_checksums(live)
    real_check = backup_module.check_errors

    def failing_check(path: Path, *, quick: bool = False) -> list[str]:  # only the check of the result fails
        return ["forced failure"] if quick and Path(path) == live else real_check(path, quick=quick)

    monkeypatch.setattr(backup_module, "check_errors", failing_check)
    connection.close()
    stored = backup_dir / backups(backup_dir)[0]
    with open(stored, "rb") as stream, pytest.raises(backup_module.RestoreUndone) as undone:
        backup_module.restore_sqlite(stream, live, timeout=10)

    assert "forced failure" in str(undone.value)
    assert table_checksums(live) == before and integrity(live) == "ok"
    (kept,) = live.parent.glob(f"{live.name}.pre-restore-*")  # kept, and named in the error
    assert str(kept) in str(undone.value)
    assert table_checksums(kept) == before and oct(kept.stat().st_mode & 0o777) == "0o600"
    backup_module.remove_file(kept)
    assert not list(live.parent.glob(f"{TEMP_PREFIX}*"))


@pytest.mark.parametrize("reader_pins_the_wal", [False, True])
def test_safety_copy_is_the_database_as_of_one_instant(reader_pins_the_wal, tmp_path, api_copies):
    """Copied from the file while frozen_file() holds it still, or by the backup API when it cannot."""
    live, copy = tmp_path / "live.db", tmp_path / "copy.db"
    writer, reader = _frames_past_the_file(live, reader_pins_the_wal=reader_pins_the_wal)
    os.close(os.open(copy, os.O_WRONLY | os.O_CREAT, 0o600))

    backup_module.safety_copy(live, copy, timeout=5)

    assert len(api_copies) == int(reader_pins_the_wal)
    assert integrity(copy) == "ok"
    assert table_checksums(copy) == table_checksums(live)
    reader.close()
    writer.close()


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


# --- GPG ------------------------------------------------------------------------------------------


@pytest.fixture
def gnupg_home(tmp_path):
    if not shutil.which("gpg"):
        pytest.skip("gpg is not installed")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    genv = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "test-pass",
                    "--quick-gen-key", "backups@songsgen.invalid", "default", "default", "never"],
                   env=genv, check=True, capture_output=True, timeout=120)
    yield home
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=genv, capture_output=True, timeout=30)


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
