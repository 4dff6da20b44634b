"""`manage.py dbcheck` and `dbmaintain` find real damage: hand-made schema drift, orphans, corrupt pages, scans."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tests.conftest import REPO
from tests.factories import make_song, make_user

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="works on a SQLite file")
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL catalogue")


def _dbcheck(*args: str) -> dict:
    """call_command dbcheck --json; returns the report (also when it exits non-zero)."""
    from io import StringIO

    out = StringIO()
    try:
        call_command("dbcheck", "--json", *args, stdout=out)
    except CommandError:
        pass
    return json.loads(out.getvalue())


@pytest.mark.django_db
def test_clean_database_passes():
    make_song()
    report = _dbcheck("--schema", "--integrity")
    assert report["ok"], report["problems"]
    assert not [p for p in report["problems"] if p["severity"] == "error"]


@pytest.mark.django_db
def test_finds_a_column_dropped_by_hand():
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE songs_song DROP COLUMN lyrics")
    report = _dbcheck("--schema")
    assert not report["ok"]
    assert {"severity": "error", "check": "schema", "subject": "songs_song", "detail": "column lyrics is missing"} \
        in report["problems"]
    with pytest.raises(CommandError, match="column lyrics is missing"):
        call_command("dbcheck", "--schema", verbosity=0)


@pytest.mark.django_db
def test_finds_an_index_dropped_by_hand():
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX songs_created")
    report = _dbcheck("--schema")
    assert [p["detail"] for p in report["problems"] if p["severity"] == "error"] == [
        "index or constraint songs_created is missing"
    ]


@pytest.mark.django_db
def test_finds_a_column_type_changed_by_hand_on_postgres_or_extra_column():
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE songs_song ADD COLUMN stray integer")
    report = _dbcheck("--schema")
    assert "column stray is not in the migration state" in [p["detail"] for p in report["problems"]]


@postgres_only
@pytest.mark.django_db
def test_finds_an_orphan_on_postgres():
    song = make_song()
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")  # foreign keys off for this session
        cursor.execute("UPDATE songs_song SET user_id = 987654 WHERE id = %s", [song.pk])
        cursor.execute("SET session_replication_role = DEFAULT")
    report = _dbcheck("--integrity")
    assert not report["ok"]
    assert any(p["check"] == "foreign_keys" and p["subject"] == "songs_song" for p in report["problems"])


@pytest.fixture
def scratch_db(tmp_path, subprocess_env):
    """A migrated SQLite file of its own, holding a few rows; returns (path, env for manage.py)."""
    if connection.vendor != "sqlite":
        pytest.skip("works on a SQLite file")
    path = tmp_path / "scratch.db"
    shutil.copy(connection.settings_dict["NAME"], path)
    env = dict(subprocess_env, DATABASE_URL=f"sqlite:///{path}", SONGSGEN_DATA_DIR=str(tmp_path))
    return path, env


def _run(env, *args):
    return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_finds_an_orphan_inserted_with_foreign_keys_off(scratch_db):
    user = make_user()
    make_song(user=user)
    connection.close()
    path, env = scratch_db
    shutil.copy(connection.settings_dict["NAME"], path)
    assert _run(env, "dbcheck", "--integrity").returncode == 0
    raw = sqlite3.connect(path)  # a plain sqlite3 connection: foreign_keys is off by default
    raw.execute("UPDATE songs_song SET user_id = 987654")
    raw.commit()
    raw.close()
    result = _run(env, "dbcheck", "--integrity")
    assert result.returncode == 1
    assert "songs_song: row" in result.stdout and "missing accounts_user row" in result.stdout


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_finds_a_corrupted_page(scratch_db):
    user = make_user()
    for i in range(300):
        make_song(user=user, title=f"corrupt me {i}", lyrics="la " * 200)
    connection.close()
    path, env = scratch_db
    shutil.copy(connection.settings_dict["NAME"], path)
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    (root,) = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'songs_song'").fetchone()
    raw.close()
    assert _run(env, "dbcheck", "--integrity").returncode == 0
    with open(path, "r+b") as handle:  # scribble over the songs table's root page
        handle.seek(page_size * (root - 1) + 8)
        handle.write(b"\xde\xad\xbe\xef" * 64)
    result = _run(env, "dbcheck", "--integrity", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert any(p["check"] == "integrity" for p in report["problems"])


@pytest.mark.django_db
def test_project_hot_queries_use_their_indexes(settings):
    settings.DBCHECK_BIG_TABLE_ROWS = 0  # every table counts as big: no hot query may scan one
    make_song()
    report = _dbcheck("--plans")
    assert set(report["plans"]) == {"songs by user and status", "newest songs", "pending songs", "next job"}
    assert not [p for p in report["problems"] if p["severity"] == "error"], report


def hot_query_by_play_count():
    """A query no index serves (used by the test below through settings)."""
    from songs.models import Song

    return Song.objects.filter(play_count=42)


@pytest.mark.django_db
def test_a_hot_query_that_scans_fails(settings):
    settings.DBCHECK_BIG_TABLE_ROWS = 0
    settings.SONGSGEN_HOT_QUERIES = {"by play count": "tests.db.test_dbcheck.hot_query_by_play_count"}
    make_song()
    report = _dbcheck("--plans")
    assert [p["detail"] for p in report["problems"]] == [
        "hot query 'by play count' scans the whole table instead of an index"
    ]
    settings.DBCHECK_BIG_TABLE_ROWS = 10**9  # a small table may be scanned
    assert _dbcheck("--plans")["ok"]


@pytest.mark.django_db
def test_sizes_reported():
    sizes = _dbcheck("--sizes")["sizes"]
    assert sizes["database_bytes"] > 0


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_dbmaintain_truncates_wal_and_vacuums(scratch_db):
    path, env = scratch_db
    user = make_user()
    for i in range(200):
        make_song(user=user, lyrics="x" * 2000, title=f"v{i}")
    connection.close()
    shutil.copy(connection.settings_dict["NAME"], path)
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("DELETE FROM queueing_generationqueue")
    raw.execute("DELETE FROM songs_song")
    raw.commit()
    free_before = raw.execute("PRAGMA freelist_count").fetchone()[0]
    raw.close()
    dry = _run(env, "dbmaintain", "--dry-run")
    assert dry.returncode == 0 and "would run VACUUM" in dry.stdout
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA freelist_count").fetchone()[0] == free_before > 0
    raw.close()
    done = _run(env, "dbmaintain", "-v2")
    assert done.returncode == 0, done.stderr
    assert "running VACUUM" in done.stdout
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA freelist_count").fetchone()[0] == 0
    raw.close()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
