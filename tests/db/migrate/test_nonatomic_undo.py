"""A non-atomic migration that fails after some of its operations committed, and a committed drop before a failure:
real `manage.py migrate` processes on a real database file or server, with the test-only app
tests/nonatomic_fixture (its 0003 adds `half_done` then runs a step that fails or hangs on demand; its 0004 drops
a column and a table with constraints, 2,000 rows each)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.db.conftest import app_env, run_migrate
from tests.db.dbstate import database_state

ROWS = 2_000
SONG, ALBUM = "nonatomic_fixture_song", "nonatomic_fixture_album"
HALF_DONE = "Add field half_done to song (nonatomic_fixture.0003_half_done)"


@pytest.fixture
def na_env(subprocess_env, tmp_path):
    return app_env(subprocess_env, tmp_path, "tests.settings_nonatomic")


@pytest.fixture
def migrate(na_env):
    """Run the safe migrate (typed, as a user would) in a subprocess; returns CompletedProcess."""

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return run_migrate(dict(na_env, **extra_env), *args, timeout=180)

    yield run
    connection.close()
    cascade = " CASCADE" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        for table in (ALBUM, SONG):
            cursor.execute(f"DROP TABLE IF EXISTS {table}{cascade}")
        cursor.execute("DELETE FROM django_migrations WHERE app = 'nonatomic_fixture'")


def at(migrate, target: str) -> None:
    """The fixture app migrated to `target` by Django's plain migrate, with 2,000 songs (rated) and albums."""
    result = migrate("nonatomic_fixture", target, "--plain", "-v0")
    assert result.returncode == 0, result.stderr
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {SONG} (id, title, plays, rating) VALUES (%s, %s, %s, %s)",
                           [(i, f"song {i}", i, i % 6) for i in range(1, ROWS + 1)])
        cursor.executemany(f"INSERT INTO {ALBUM} (id, name, song_id) VALUES (%s, %s, %s)",
                           [(i, f"album {i}", i) for i in range(1, ROWS + 1)])


def state() -> dict:
    connection.close()  # what is on disk now
    return database_state(connection)


def columns(table: str) -> set[str]:
    connection.close()
    with connection.cursor() as cursor:
        return {c.name for c in connection.introspection.get_table_description(cursor, table)}


def tables() -> set[str]:
    connection.close()
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


def plays() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT plays FROM {SONG} ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def applied() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM django_migrations WHERE app = 'nonatomic_fixture'")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_a_failed_non_atomic_migration_reverses_the_operations_it_completed(migrate):
    at(migrate, "0001")
    before = state()
    failed = migrate("nonatomic_fixture", "0003", "--json", SONGSGEN_NA_FAIL="0003")
    assert failed.returncode == 1, failed.stderr
    assert "half_done" not in columns(SONG)
    assert state() == before  # schema, every row, django_migrations
    report = json.loads(failed.stdout)
    assert report["status"] == "restored"
    assert report["reversed_operations"] == [HALF_DONE]
    assert report["unapplied"] == ["nonatomic_fixture.0002_add_genre"]
    assert "back as it was" in failed.stderr and "injected failure in 0003" in failed.stderr

    fixed = migrate("nonatomic_fixture", "0003")
    assert fixed.returncode == 0, fixed.stderr
    assert "Verified: the live schema matches the migrations" in fixed.stdout
    assert {"genre", "half_done"} <= columns(SONG)


@pytest.mark.django_db(transaction=True)
def test_sigkill_between_two_operations_then_resume_restore_and_migrate(migrate, na_env, tmp_path):
    at(migrate, "0001")
    before = state()
    flag = tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "migrate", "nonatomic_fixture", "0003"],
                            env=dict(na_env, SONGSGEN_NA_HANG="0003", SONGSGEN_NA_FLAG=str(flag)), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "migrate never reached 0003's step"
        time.sleep(0.05)
    assert "half_done" in columns(SONG)  # the AddField committed; the step is running
    proc.kill()
    proc.wait(timeout=30)

    again = migrate("nonatomic_fixture", "0003")
    assert again.returncode == 2
    assert "interrupted" in again.stderr and "--resume-restore" in again.stderr
    assert "nonatomic_fixture.0002_add_genre" in again.stderr and "nonatomic_fixture.0003_half_done" in again.stderr
    restored = migrate("--resume-restore")
    assert restored.returncode == 0, restored.stderr
    assert "back as it was" in restored.stdout
    assert state() == before
    done = migrate("nonatomic_fixture", "0003")
    assert done.returncode == 0, done.stderr
    assert {"genre", "half_done"} <= columns(SONG)
    assert applied() == {"0001_create_song", "0002_add_genre", "0003_half_done"}
    assert not list(tmp_path.glob("migrate-*-default-*.json"))[1:]  # at most the last-run record


@pytest.mark.django_db(transaction=True)
def test_an_operation_that_cannot_be_reversed_stays_and_the_next_run_skips_it(migrate, tmp_path):
    at(migrate, "0001")
    irreversible = {"SONGSGEN_NA_IRREVERSIBLE": "1"}
    failed = migrate("nonatomic_fixture", "0003", "--allow-unsafe", "--json", SONGSGEN_NA_FAIL="0003", **irreversible)
    assert failed.returncode == 3, failed.stderr
    report = json.loads(failed.stdout)
    assert report["status"] == "failed" and report["reversed_operations"] == [HALF_DONE]
    assert "back as it was" not in failed.stderr
    assert "Raw Python operation (nonatomic_fixture.0003_half_done): it has no reverse operation" in failed.stderr
    assert "nonatomic_fixture.0002_add_genre: applied before it" in failed.stderr
    assert "Running migrate again continues from here" in failed.stderr
    assert "half_done" not in columns(SONG)
    assert plays() == [i + 7 for i in range(1, ROWS + 1)]
    other = migrate("nonatomic_fixture", "0001", **irreversible)  # a plan that leaves the half-applied one out
    assert other.returncode == 2 and "nonatomic_fixture.0003_half_done is half-applied" in other.stderr
    assert "genre" in columns(SONG)  # nothing was changed

    fixed = migrate("nonatomic_fixture", "0003", "--allow-unsafe", **irreversible)
    assert fixed.returncode == 0, fixed.stderr
    assert "already done, skipped: Raw Python operation" in fixed.stdout
    assert plays() == [i + 7 for i in range(1, ROWS + 1)]  # once, not twice
    assert "half_done" in columns(SONG)
    assert not list(tmp_path.glob("migrate-stopped-*"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("then", ["from-snapshot", "continue"])
def test_a_committed_drop_is_never_re_created_empty(migrate, tmp_path, then):
    at(migrate, "0003")
    before = state()
    failed = migrate("nonatomic_fixture", "0005", "--allow-unsafe", "--json", SONGSGEN_NA_FAIL="0005")
    assert failed.returncode == 3, failed.stderr
    assert json.loads(failed.stdout)["status"] == "failed"
    assert "back as it was" not in failed.stderr
    assert f"DROPPED, rows not recoverable by reverse operations: column rating of table {SONG}, table {ALBUM}" \
        in failed.stderr
    assert "manage.py migrate --resume-restore --from-snapshot` puts back the snapshot" in failed.stderr
    assert "MiB" in failed.stderr and "every row anyone wrote since then is lost" in failed.stderr
    assert ALBUM not in tables() and "rating" not in columns(SONG)  # not re-created empty
    assert applied() == {"0001_create_song", "0002_add_genre", "0003_half_done", "0004_drop"}

    if then == "from-snapshot":
        restored = migrate("--resume-restore", "--from-snapshot")
        assert restored.returncode == 0, restored.stderr
        assert state() == before  # 2,000 ratings and albums back
    else:
        done = migrate("nonatomic_fixture", "0005", "--allow-unsafe")
        assert done.returncode == 0, done.stderr
        assert "0005_after_drop" in applied()
        assert not list(tmp_path.glob("migrate-stopped-*"))


@pytest.mark.django_db(transaction=True)
def test_a_group_that_drops_is_verified_before_its_commit(migrate):
    at(migrate, "0003")
    before = state()
    failed = migrate("nonatomic_fixture", "0005", "--allow-unsafe", "--json", SONGSGEN_NA_SABOTAGE="1")
    assert failed.returncode == 1, failed.stderr
    report = json.loads(failed.stdout)
    assert report["status"] == "restored" and report["error"].startswith("verify failed")
    assert report["rolled_back"] == ["nonatomic_fixture.0004_drop"] and report["unapplied"] == []
    assert any("column stray is not in the migration state" in p["detail"] for p in report["verification"])
    assert "back as it was" in failed.stderr
    assert state() == before  # the drop never committed: every rating and album is there


@pytest.mark.django_db(transaction=True)
def test_a_drop_a_non_atomic_migration_committed_stays_and_the_next_run_skips_it(migrate):
    at(migrate, "0003")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {SONG} SET genre = 'pop'")
    drop_genre = {"SONGSGEN_NA_DROP_GENRE": "1"}
    failed = migrate("nonatomic_fixture", "0005", "--allow-unsafe", SONGSGEN_NA_FAIL="0005", **drop_genre)
    assert failed.returncode == 3, failed.stderr
    assert "back as it was" not in failed.stderr
    assert ("Remove field genre from song (nonatomic_fixture.0005_after_drop): its reverse cannot bring back the "
            "data it dropped") in failed.stderr
    assert f"DROPPED, rows not recoverable by reverse operations: column genre of table {SONG}" in failed.stderr
    assert "genre" not in columns(SONG)  # not re-created empty

    fixed = migrate("nonatomic_fixture", "0005", "--allow-unsafe", **drop_genre)
    assert fixed.returncode == 0, fixed.stderr
    assert "already done, skipped: Remove field genre from song" in fixed.stdout
    assert "Verified: the live schema matches the migrations" in fixed.stdout
    assert "0005_after_drop" in applied()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's lock timeout and retry")
@pytest.mark.django_db(transaction=True)
def test_a_lock_timeout_retry_skips_the_operations_already_done(migrate, na_env, tmp_path):
    import psycopg

    from tests.conftest import database_url_for

    at(migrate, "0001")
    folder = tmp_path / "lock"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "migrate", "nonatomic_fixture", "0003"],
                            env=dict(na_env, SONGSGEN_NA_LOCK_DIR=str(folder)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for(name: str) -> None:
        deadline = time.monotonic() + 120
        while not (folder / name).exists():
            assert proc.poll() is None and time.monotonic() < deadline, f"migrate never reached {name}"
            time.sleep(0.05)

    with psycopg.connect(database_url_for(connection.settings_dict)) as holder:
        wait_for("attempt-1")  # 0003's AddField committed; its step is about to read the album table
        holder.execute(f"LOCK TABLE {ALBUM} IN ACCESS EXCLUSIVE MODE")  # as a long transaction would
        (folder / "locked").write_text("")
        wait_for("attempt-2")  # the step timed out waiting and the migration is tried again
        holder.rollback()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Lock timeout in nonatomic_fixture.0003_half_done" in err
    assert "already done, skipped: Add field half_done to song" in out
    assert {"genre", "half_done"} <= columns(SONG)
    assert "0003_half_done" in applied()
