"""One migrate at a time, on a live database: the migrate lock, the crash marker read under it, PostgreSQL's
lock timeout with retries, and `--rehearse` — as real processes on a real database file or server."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.db.live import NON_ATOMIC, hanging_migrate, state

pg_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL locking")


@pytest.mark.django_db(transaction=True)
def test_two_migrates_at_once_one_runs_the_other_refuses(migrate, fixture_env, tmp_path, rows):
    # The first hangs in its non-atomic 0003: it holds the migrate lock but not SQLite's write lock, so the
    # second starts up (Django's own start-up checks open a write transaction on SQLite) and meets the lock.
    first = hanging_migrate(dict(fixture_env, **NON_ATOMIC), tmp_path, "--json", hang=30,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        second = migrate("migrations_fixture", "0003")
        assert second.returncode == 2, second.stderr
        assert f"another migrate (pid {first.pid}, started at " in second.stderr
        assert "holds the database" in second.stderr and "Traceback" not in second.stderr
        resume = migrate("--resume-restore")  # the marker of a running migrate is not an interrupted one
        assert resume.returncode == 2 and f"pid {first.pid}" in resume.stderr
        waiting = migrate("migrations_fixture", "0003", "--lock-wait", "60", "--json")
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        assert json.loads(out)["status"] == "ok"
        assert waiting.returncode == 0, waiting.stderr
        assert json.loads(waiting.stdout)["status"] == "nothing-to-do"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM songs_song WHERE title LIKE '%(touched)'")
        assert cursor.fetchone()[0] == 4  # applied once, by the first, and never undone



@pg_only
@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_postgres_lock_timeout_gives_up_cleanly_where_plain_django_queues(migrate, fixture_env):
    import psycopg

    from tests.conftest import database_url_for

    assert migrate("migrations_fixture", "0001").returncode == 0
    before = state()
    holder = psycopg.connect(database_url_for(connection.settings_dict))
    try:
        # A long transaction that read songs under SHARE: 0002's UPDATE of songs_song must wait for it.
        holder.execute("LOCK TABLE songs_song IN SHARE MODE")
        started = time.monotonic()
        ours = migrate("migrations_fixture", "0002", "--lock-retries", "2",
                       extra_env={"SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS": "1000"}, timeout=60)
        waited = time.monotonic() - started
        assert ours.returncode == 1, ours.stderr
        # Each attempt says so and names the session in the way; then a clean refusal, rolled back.
        assert "(attempt 1 of 3)" in ours.stderr and "(attempt 2 of 3)" in ours.stderr
        assert f"blocked by pid {holder.info.backend_pid}" in ours.stderr
        assert "lock timeout" in ours.stderr and "Another session held a lock" in ours.stderr
        assert "rolled back" in ours.stderr and "Traceback" not in ours.stderr
        assert waited < 30
        assert state() == before

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
    assert state() == before


@pg_only
@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_postgres_lock_held_for_3_s_is_retried_and_succeeds(migrate):
    import threading

    import psycopg

    from tests.conftest import database_url_for

    assert migrate("migrations_fixture", "0001").returncode == 0
    holder = psycopg.connect(database_url_for(connection.settings_dict))
    # 0002's RunSQL (an UPDATE of songs_song) meets the lock: the timeout covers RunSQL too.
    holder.execute("LOCK TABLE songs_song IN SHARE MODE")
    url = database_url_for(connection.settings_dict)

    def release_3_s_after_the_migrate_waits() -> None:
        # Timed from the migrate's first wait, not from its start: a slow start must not find the lock gone.
        with psycopg.connect(url, autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'songs_song'::regclass"
            ).fetchone()[0]:
                time.sleep(0.05)
        time.sleep(3.0)
        holder.rollback()

    release = threading.Thread(target=release_3_s_after_the_migrate_waits)
    release.start()
    try:
        ours = migrate("migrations_fixture", "0002", "--json",
                       extra_env={"SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS": "1000"}, timeout=90)
    finally:
        release.join()
        holder.close()
    assert ours.returncode == 0, ours.stderr
    report = json.loads(ours.stdout)
    assert report["status"] == "ok" and report["attempts"] >= 2
    assert "migrations_fixture.0002_touch_existing_rows" in {w["migration"] for w in report["lock_waits"]}
    assert "Lock timeout in migrations_fixture.0002_touch_existing_rows (attempt 1 of 6)" in ours.stderr


def _live_files_digest() -> str:
    """The bytes of the database (SQLite: file and WAL after a checkpoint; PostgreSQL: every row and the schema)."""
    if connection.vendor != "sqlite":
        from tests.db.dbstate import database_state

        connection.close()
        return hashlib.sha256(repr(database_state(connection)).encode()).hexdigest()
    from pathlib import Path

    name = Path(connection.settings_dict["NAME"])
    digest = hashlib.sha256()
    for path in (name, name.with_name(name.name + "-wal")):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


@pg_only
@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_postgres_autovacuum_in_the_way_yields_within_the_lock_timeout(migrate):
    """PostgreSQL cancels an autovacuum that blocks a DDL only after the waiting session's deadlock_timeout (1 s
    by default), and every writer queues behind the DDL meanwhile; ours cancels it after 20 ms."""
    import psycopg

    from tests.conftest import database_url_for

    assert migrate("migrations_fixture", "0001").returncode == 0
    table = "migrations_fixture_widget"
    with psycopg.connect(database_url_for(connection.settings_dict), autocommit=True) as admin:
        admin.execute(f"INSERT INTO {table} (name, qty) SELECT 'w', g FROM generate_series(1, 100000) g")
        # An autovacuum that takes minutes: every page costs more than its budget, so it sleeps 100 ms per page.
        admin.execute(f"ALTER TABLE {table} SET (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = "
                      "0, autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1)")
        admin.execute(f"UPDATE {table} SET qty = qty + 1")
        admin.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        admin.execute("SELECT pg_reload_conf()")
        try:
            deadline = time.monotonic() + 90
            while not admin.execute("SELECT 1 FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
                                    "AND query LIKE %s", [f"%{table}%"]).fetchone():
                assert time.monotonic() < deadline, "no autovacuum started on the table"
                time.sleep(0.1)
            # 0002 adds a column (ACCESS EXCLUSIVE), the autovacuum holds SHARE UPDATE EXCLUSIVE.
            ours = migrate("migrations_fixture", "0002", "--lock-retries", "0",
                           extra_env={"SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS": "500"}, timeout=120)
        finally:
            admin.execute("ALTER SYSTEM RESET autovacuum_naptime")
            admin.execute("SELECT pg_reload_conf()")
            admin.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    assert ours.returncode == 0, ours.stderr
    assert "Lock timeout" not in ours.stderr


@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_rehearse_only_reports_each_migration_and_leaves_the_live_database_alone(migrate, tmp_path):
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    before = _live_files_digest()
    result = migrate("migrations_fixture", "0003", "--rehearse-only")
    assert result.returncode == 0, result.stderr
    for name in ("0001_create_widget", "0002_touch_existing_rows", "0003_fail_on_demand"):
        assert f"migrations_fixture.{name}" in result.stdout
    assert "Result: rehearsed" in result.stdout
    assert _live_files_digest() == before
    scratch = [p for p in (tmp_path / "backups").iterdir() if not p.name.startswith("pre-migrate-")]
    assert scratch == []  # the scratch copy is gone; the snapshot it came from is kept
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'songsgen_rehearse_%'")
            assert cursor.fetchall() == []

    as_json = migrate("migrations_fixture", "0003", "--rehearse-only", "--json")
    steps = json.loads(as_json.stdout)["rehearsal"]["steps"]
    assert [s["migration"] for s in steps] == ["migrations_fixture.0001_create_widget",
                                               "migrations_fixture.0002_touch_existing_rows",
                                               "migrations_fixture.0003_fail_on_demand"]
    assert steps[1]["rows"] >= 4  # 0002 updates every song
    assert _live_files_digest() == before


@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_rehearse_then_apply_with_noinput(migrate):
    result = migrate("migrations_fixture", "0003", "--rehearse", "--noinput", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok" and report["rehearsal"]["ok"]
    failing = migrate("migrations_fixture", "zero", "--plain", "-v0")
    assert failing.returncode == 0
    refused = migrate("migrations_fixture", "0003", "--rehearse", "--noinput",
                      extra_env={"SONGSGEN_FIXTURE_MODE": "fail"})
    assert refused.returncode == 2 and "The rehearsal failed" in refused.stderr


@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_dbrestore_and_transferdb_refuse_while_a_migrate_runs(migrate, fixture_env, tmp_path, manage):
    from tests.conftest import database_url_for

    first = hanging_migrate(dict(fixture_env, **NON_ATOMIC), tmp_path, hang=40, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        source = tmp_path / "empty.db"
        source.touch()
        # A backup file that exists: a missing one is refused before the lock is even tried.
        restore = manage("dbrestore", "--noinput", "-I", str(source), env=fixture_env)
        assert restore.returncode != 0
        assert f"another migrate (pid {first.pid}, started at " in restore.stderr
        assert "Traceback" not in restore.stderr
        transfer = manage("transferdb", "--from", f"sqlite:///{source}", "--to",
                          database_url_for(connection.settings_dict), env=fixture_env)
        assert transfer.returncode != 0
        assert f"another migrate (pid {first.pid}, started at " in transfer.stderr
        assert "Traceback" not in transfer.stderr
    finally:
        first.kill()
        first.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_bad_lock_wait_is_one_line_and_changes_nothing(migrate, tmp_path):
    for value in ("-1", "soon", "inf"):
        result = migrate("migrations_fixture", "0003", "--lock-wait", value)
        assert result.returncode == 2
        assert "--lock-wait" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("migrate-in-progress-*")) and not (tmp_path / "backups").exists()
