"""The safe `manage.py migrate`, as real processes on a real database file or server.

Failures are injected by the test-only app tests/migrations_fixture (installed through
tests/settings_fixture.py in the subprocess only): its 0003 fails, breaks the schema, or hangs on demand
after 0001 and 0002 have changed the database, including rows that existed before.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.db.dbstate import database_state
from tests.factories import make_song, make_user

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite snapshot path")


@pytest.fixture
def fixture_env(subprocess_env, tmp_path):
    env = dict(subprocess_env, DJANGO_SETTINGS_MODULE="tests.settings_fixture", SONGSGEN_DATA_DIR=str(tmp_path))
    env.pop("SONGSGEN_BACKUP_DIR", None)
    return env


@pytest.fixture
def migrate(fixture_env):
    """Run the safe migrate (typed, as a user would) in a subprocess; returns CompletedProcess."""

    def run(*args: str, extra_env: dict[str, str] | None = None, timeout: float = 120):
        env = dict(fixture_env, **(extra_env or {}))
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "migrate", *args],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )

    yield run
    # Leave the test database without the fixture app, whatever the test did.
    run("migrations_fixture", "zero", "--plain", "-v0")


@pytest.fixture
def rows():
    user = make_user()
    for i in range(4):
        make_song(user=user, title=f"keep {i}")


def _state():
    connection.close()  # read what is on disk now, not a cached view
    return database_state(connection)


@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_failure_half_way_leaves_database_as_before(migrate):
    before = _state()
    result = migrate("migrations_fixture", "0003", extra_env={"SONGSGEN_FIXTURE_MODE": "fail"})
    assert result.returncode == 1, result.stderr
    assert "migrations_fixture.0003_fail_on_demand" in result.stderr
    assert "injected failure half-way" in result.stderr
    assert "back as it was" in result.stderr
    assert _state() == before


@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_verification_failure_restores(migrate):
    before = _state()
    result = migrate("migrations_fixture", "0003", "--json", extra_env={"SONGSGEN_FIXTURE_MODE": "verify"})
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "restored"
    assert report["error"].startswith("verify failed")
    assert any("column note is missing" in p["detail"] for p in report["verification"])
    assert _state() == before


@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_success_applies_verifies_and_reports(migrate, tmp_path):
    result = migrate("migrations_fixture", "0003", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok"
    assert [a["migration"] for a in report["applied"]] == [
        "migrations_fixture.0001_create_widget", "migrations_fixture.0002_touch_existing_rows",
        "migrations_fixture.0003_fail_on_demand",
    ]
    assert not [p for p in report["verification"] if p["severity"] == "error"]
    if connection.vendor == "sqlite":
        assert report["guard"] == "snapshot"
        backup = Path(report["backup"])
        assert backup.parent == tmp_path / "backups" and backup.stat().st_mode & 0o777 == 0o600
    else:
        assert report["guard"] == "transaction" and report["backup"] is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM songs_song WHERE title LIKE '%(touched)'")
        assert cursor.fetchone()[0] == 4
    assert not list(tmp_path.glob("migrate-in-progress-*"))


def _hanging_migrate(fixture_env, tmp_path, **popen) -> subprocess.Popen:
    """`migrate migrations_fixture 0003` in a subprocess, returned once its failing migration hangs half-way."""
    flag = tmp_path / "flag"
    env = dict(fixture_env, SONGSGEN_FIXTURE_MODE="hang", SONGSGEN_FIXTURE_FLAG=str(flag))
    proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "migrate", "migrations_fixture", "0003"],
                            env=env, cwd=REPO, **popen)
    _wait_for(flag, proc)
    return proc


@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_ctrl_c_restores(migrate, fixture_env, tmp_path):
    before = _state()
    proc = _hanging_migrate(fixture_env, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Ctrl-C" in err and "migrations_fixture.0003_fail_on_demand" in err
    assert _state() == before


@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_sigkill_then_resume_restore(migrate, fixture_env, tmp_path):
    before = _state()
    proc = _hanging_migrate(fixture_env, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait(timeout=30)
    if connection.vendor == "postgresql":
        # The plan ran in one transaction; the server rolls back a dead client's transaction itself.
        time.sleep(0.5)
        assert _state() == before
        return
    assert _state() != before  # 0001 and 0002 were committed before the kill
    again = migrate("migrations_fixture", "0003")
    assert again.returncode == 2
    assert "--resume-restore" in again.stderr and "interrupted" in again.stderr
    restored = migrate("--resume-restore")
    assert restored.returncode == 0, restored.stderr
    assert "back as it was" in restored.stdout
    assert _state() == before
    assert not list(tmp_path.glob("migrate-in-progress-*"))


@sqlite_only
@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_not_enough_room_is_refused_before_anything_changes(migrate, tmp_path):
    before = _state()
    result = migrate("migrations_fixture", "0003", extra_env={"SONGSGEN_MIGRATE_BACKUP_MARGIN_MB": str(10**9)})
    assert result.returncode == 2
    assert "Not enough room for the backup" in result.stderr and "Nothing was changed" in result.stderr
    assert _state() == before
    assert not list((tmp_path / "backups").glob("*"))


@pytest.mark.django_db(transaction=True)
def test_check_safety_flags_the_unsafe_migration(migrate):
    # Dropping a column of a table created earlier in the same plan is safe: no running code uses it yet.
    assert migrate("--check-safety").returncode == 0
    assert migrate("migrations_fixture", "0003").returncode == 0
    # Once the table exists, dropping its column is not.
    result = migrate("--check-safety")
    assert result.returncode == 2
    assert "DROP_COLUMN in migrations_fixture.0004_drop_qty" in result.stderr
    unsafe_applied = migrate("migrations_fixture", "0004")
    assert unsafe_applied.returncode == 2 and "--allow-unsafe" in unsafe_applied.stderr


@pytest.mark.django_db(transaction=True)
def test_django_options_still_work(migrate):
    plan = migrate("--plan")
    assert plan.returncode == 0 and "migrations_fixture.0001_create_widget" in plan.stdout
    check = migrate("--check")
    assert check.returncode == 1  # Django's own "unapplied migrations" exit
    fake = migrate("migrations_fixture", "0001", "--fake", "--json")
    # Faked but the table is not there: verification catches it and the migration record is undone.
    assert fake.returncode == 1 and json.loads(fake.stdout)["status"] == "restored"


def _wait_for(flag: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not flag.exists():
        assert proc.poll() is None, "migrate ended before reaching the hang"
        assert time.monotonic() < deadline, "migrate never reached 0003"
        time.sleep(0.05)
    time.sleep(0.2)



pg_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL snapshot and locking")
NON_ATOMIC = {"SONGSGEN_FIXTURE_ATOMIC": "0"}


@pg_only
@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_postgres_non_atomic_plan_failure_is_restored_from_pg_dump(migrate, tmp_path):
    before = _state()
    result = migrate("migrations_fixture", "0003", "--json", extra_env={**NON_ATOMIC, "SONGSGEN_FIXTURE_MODE": "fail"})
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["guard"] == "snapshot" and report["status"] == "restored"
    snap = Path(report["backup"])
    assert snap.suffix == ".pgdump" and snap.stat().st_mode & 0o777 == 0o600
    assert "injected failure half-way" in result.stderr and "back as it was" in result.stderr
    assert _state() == before  # 0001 and 0002 had committed: the restore took them back


@pg_only
@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_postgres_sigkill_mid_non_atomic_plan_then_resume_restore(migrate, fixture_env, tmp_path):
    before = _state()
    proc = _hanging_migrate(dict(fixture_env, **NON_ATOMIC), tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(0.5)
    assert _state() != before  # 0001 and 0002 committed one by one
    again = migrate("migrations_fixture", "0003", extra_env=NON_ATOMIC)
    assert again.returncode == 2 and "--resume-restore" in again.stderr
    restored = migrate("--resume-restore")
    assert restored.returncode == 0, restored.stderr
    assert _state() == before


@pg_only
@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_postgres_lock_timeout_gives_up_cleanly_where_plain_django_queues(migrate, fixture_env):
    import psycopg

    from tests.conftest import database_url_for

    assert migrate("migrations_fixture", "0001").returncode == 0
    before = _state()
    holder = psycopg.connect(database_url_for(connection.settings_dict))
    try:
        # A long transaction that read songs under SHARE: 0002's UPDATE of songs_song must wait for it.
        holder.execute("LOCK TABLE songs_song IN SHARE MODE")
        started = time.monotonic()
        ours = migrate("migrations_fixture", "0002", extra_env={"SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS": "1000"},
                       timeout=60)
        waited = time.monotonic() - started
        assert ours.returncode == 1, ours.stderr
        assert "lock timeout" in ours.stderr and "Another session held a lock" in ours.stderr
        assert "rolled back" in ours.stderr
        assert waited < 15
        assert _state() == before

        plain = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "migrate", "migrations_fixture", "0002", "--plain"],
            env=fixture_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            time.sleep(4)
            assert plain.poll() is None, "plain Django's migrate should still be queued behind the lock"
        finally:
            plain.kill()
            plain.wait(timeout=30)
    finally:
        holder.rollback()
        holder.close()
    time.sleep(0.5)
    assert _state() == before


@pytest.mark.django_db
def test_verify_checks_integrity_of_the_tables_the_plan_touched():
    from django.db.migrations.executor import MigrationExecutor

    from songsgen.db.migrate import touched_tables

    executor = MigrationExecutor(connection)
    state = executor.loader.project_state()
    create_event = executor.loader.get_migration("accounts", "0002_create_user_event")
    genre_index = executor.loader.get_migration("songs", "0005_add_song_genre_index")
    backfill = executor.loader.get_migration("songs", "0003_backfill_song_analytics_data")
    assert touched_tables([(create_event, False), (genre_index, False)], state) == {
        "accounts_userevent", "songs_song"
    }
    assert touched_tables([(backfill, False)], state) is None  # RunPython: any table, so all are checked
