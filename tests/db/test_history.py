"""Guard rails (songsgen/db/history.py), as real `manage.py` processes on real files and servers.

`migrate` leaves another application's database alone; `dbrestore` refuses a backup made by a newer
release and names what `migrate` will apply after an older one; backup folders are owner-only.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.db.dbstate import database_state
from tests.factories import make_song, make_user

pg_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL server")
FOREIGN_ADVICE = "Nothing was changed. Point DATABASE_URL at the right database, or run with --adopt"


def manage_in(env: dict[str, str], *args: str, umask: int = 0o022) -> subprocess.CompletedProcess:
    """`manage.py ARGS` as a real process with `env` and `umask`."""
    return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=180, umask=umask)


@pytest.fixture
def own_env(tmp_path: Path) -> dict[str, str]:
    """An environment with a data folder of this test's own and no DATABASE_URL (its data/songs.db)."""
    env = dict(os.environ, SONGSGEN_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(REPO))
    env.setdefault("SECRET_KEY", "test-only-secret-key-never-used-outside-the-test-suite")
    for name in ("DATABASE_URL", "SONGSGEN_BACKUP_DIR"):
        env.pop(name, None)
    return env


def _assert_clean_refusal(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()  # one line
    assert line.startswith("CommandError: Refused: ")
    for needle in needles:
        assert needle in line, line


# --- migrate and a foreign database ---------------------------------------------------------------


def _foreign_sqlite(path: Path, *, django_project: bool) -> None:
    """Another application's SQLite file, in rollback-journal mode; or another Django project's."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO invoices (total) VALUES (?)", [(i * 1.5,) for i in range(100)])
    if django_project:
        conn.execute("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, "
                     "applied TEXT)")
        conn.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('shop', '0001_initial', "
                     "'2024-01-01 00:00:00')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("django_project", [False, True], ids=["another-application", "another-django-project"])
def test_migrate_refuses_a_foreign_sqlite_file_untouched_and_adopts_it_when_told(django_project, own_env,
                                                                                   tmp_path):
    foreign = tmp_path / "shop.db"
    _foreign_sqlite(foreign, django_project=django_project)
    before = foreign.read_bytes()
    env = dict(own_env, DATABASE_URL=f"sqlite:///{foreign}")

    refused = manage_in(env, "migrate")

    tables = "3 table(s) (customers, django_migrations, invoices)" if django_project else \
        "2 table(s) (customers, invoices)"
    why = "the migration history of shop but none of this project's apps" if django_project else \
        "no migration history of this project"
    _assert_clean_refusal(refused, str(foreign), tables, why, FOREIGN_ADVICE)
    assert foreign.read_bytes() == before  # not even the switch to WAL
    assert not Path(f"{foreign}-wal").exists() and not Path(f"{foreign}-shm").exists()
    conn = sqlite3.connect(f"file:{foreign}?mode=ro", uri=True)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    assert not (tmp_path / "data" / "backups").exists()
    assert foreign.read_bytes() == before
    assert manage_in(env, "migrate", "--json").returncode == 2
    assert foreign.read_bytes() == before

    adopted = manage_in(env, "migrate", "--adopt")

    assert adopted.returncode == 0, adopted.stderr
    assert "Result: ok" in adopted.stdout
    conn = sqlite3.connect(foreign)
    assert conn.execute("SELECT COUNT(*) FROM invoices").fetchone()[0] == 100
    assert conn.execute("SELECT COUNT(*) FROM songs_song").fetchone()[0] == 0
    conn.close()
    again = manage_in(env, "migrate")  # ours now: no --adopt needed
    assert again.returncode == 0, again.stderr


def test_migrate_accepts_an_empty_database_and_makes_the_backup_folder_owner_only(own_env, tmp_path):
    result = manage_in(own_env, "migrate", umask=0o002)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "songs.db").exists()
    assert (tmp_path / "data" / "backups").stat().st_mode & 0o777 == 0o700
    assert list((tmp_path / "data" / "backups").glob("pre-migrate-songs-*"))


def _pg_tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        return [row[0] for row in rows.fetchall()]


@pg_only
@pytest.mark.django_db
def test_migrate_refuses_a_foreign_postgres_database(empty_pg_database, own_env):
    import psycopg

    with psycopg.connect(empty_pg_database) as conn:
        conn.execute("CREATE TABLE invoices (id int PRIMARY KEY, total numeric)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    env = dict(own_env, DATABASE_URL=empty_pg_database)

    refused = manage_in(env, "migrate")

    _assert_clean_refusal(refused, "holds 1 table(s) (invoices) but no migration history of this project",
                          f"'{empty_pg_database.rsplit('/', 1)[1]}'", FOREIGN_ADVICE)
    assert _pg_tables(empty_pg_database) == ["invoices"]  # no django_migrations either

    adopted = manage_in(env, "migrate", "--adopt", "-v0")
    assert adopted.returncode == 0, adopted.stderr
    assert {"invoices", "django_migrations", "songs_song"} <= set(_pg_tables(empty_pg_database))


# --- dbrestore and the backup's migration history -------------------------------------------------


@pytest.fixture
def backup_env(subprocess_env, tmp_path) -> dict[str, str]:
    return dict(subprocess_env, SONGSGEN_BACKUP_DIR=str(tmp_path / "backups"))


def _record(app: str, name: str, *, present: bool) -> None:
    """Add or remove one row of the live django_migrations, committed."""
    with connection.cursor() as cursor:
        if present:
            cursor.execute("INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, %s)",
                           [app, name, "2030-01-01 00:00:00+00:00"])
        else:
            cursor.execute("DELETE FROM django_migrations WHERE app = %s AND name = %s", [app, name])
    connection.close()


def _back_up(env: dict[str, str], tmp_path: Path) -> str:
    """`dbbackup`, which must succeed; the name of the one backup written."""
    result = manage_in(env, "dbbackup")
    assert result.returncode == 0, result.stderr
    (name,) = [p.name for p in (tmp_path / "backups").iterdir() if not p.name.endswith(".metadata")]
    return name


def _state() -> dict:
    connection.close()  # what is on disk or on the server now
    return database_state(connection)


@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_backup_made_by_a_newer_release(backup_env, tmp_path):
    make_song(user=make_user(), title="kept")
    _record("songs", "0099_future", present=True)
    try:
        name = _back_up(backup_env, tmp_path)
    finally:
        _record("songs", "0099_future", present=False)
    before = _state()

    result = manage_in(backup_env, "dbrestore", "--noinput", "-i", name)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("CommandError")]
    assert line == (
        "CommandError: Restore refused: this backup was made by a newer release: migrations "
        "songs.0099_future unknown here; restore it with that release, or pick an older backup. "
        "The live database was not changed."
    )
    assert _state() == before


@pytest.mark.django_db(transaction=True)
def test_restore_of_an_older_backup_names_what_migrate_will_apply(backup_env, tmp_path):
    from django.db.migrations.recorder import MigrationRecorder

    make_song(user=make_user(), title="kept")
    last = ("songs", "0005_add_song_genre_index")
    _record(*last, present=False)
    try:
        name = _back_up(backup_env, tmp_path)
    finally:
        _record(*last, present=True)
    try:
        result = manage_in(backup_env, "dbrestore", "--noinput", "-i", name)

        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert ("Note: this backup predates the code: `manage.py migrate` will now apply 1 migration(s): "
                "songs.0005_add_song_genre_index.") in result.stdout
        connection.close()
        assert last not in MigrationRecorder(connection).applied_migrations()  # the backup's history
    finally:
        connection.close()
        if last not in MigrationRecorder(connection).applied_migrations():
            _record(*last, present=True)  # the test database's schema has it: keep its history true


# --- owner-only backup folders --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_dbbackup_makes_the_backup_folder_owner_only(backup_env, tmp_path):
    make_user()
    folder = tmp_path / "deep" / "backups"
    result = manage_in(dict(backup_env, SONGSGEN_BACKUP_DIR=str(folder)), "dbbackup", umask=0o002)
    assert result.returncode == 0, result.stderr
    assert folder.stat().st_mode & 0o777 == 0o700
