"""The safe `manage.py migrate`, as real processes on a real database file or server.

Failures are injected by the test-only app tests/migrations_fixture (installed through
tests/settings_fixture.py in the subprocess only): its 0003 fails, breaks the schema, or hangs on demand
after 0001 and 0002 have changed the database, including rows that existed before.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from django.db import connection

from tests.db.live import NON_ATOMIC, assert_writer_rows_kept, hanging_migrate, killed_half_way, state

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite snapshot path")


@pytest.mark.django_db(transaction=True)
# A verification failure after a non-atomic plan is left out: reverse operations cannot run on a schema that
# does not match the migrations (that run ends in exit 3 and the snapshot advice).
@pytest.mark.parametrize(("mode", "atomic"), [("fail", "1"), ("fail", "0"), ("verify", "1"), ("orphan", "1")])
def test_failure_under_a_live_writer_keeps_every_row(migrate, writer, mode, atomic):
    before = state()
    result = migrate("migrations_fixture", "0003", "--json",
                     extra_env={"SONGSGEN_FIXTURE_MODE": mode, "SONGSGEN_FIXTURE_ATOMIC": atomic})
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "restored"
    assert "back as it was" in result.stderr and "Rows other connections committed meanwhile are kept" in result.stderr
    if mode == "fail":
        assert "migrations_fixture.0003_fail_on_demand" in result.stderr
        assert "injected failure half-way" in result.stderr
    elif mode == "orphan":
        # Caught before the commit: by verification's foreign-key check, or the engine's at commit.
        assert "accounts_userevent" in result.stderr
    else:
        assert report["error"].startswith("verify failed")
        assert any("column note is missing" in p["detail"] for p in report["verification"])
    if atomic == "1":
        assert report["guard"] == "transaction" and report["unapplied"] == []
    else:
        assert report["guard"] == "transaction+reverse"
        assert report["unapplied"] == ["migrations_fixture.0002_touch_existing_rows",
                                       "migrations_fixture.0001_create_widget"]
        touch = report["applied"][1]  # a batched backfill: it committed batch by batch, outside any group
        assert touch["migration"] == "migrations_fixture.0002_touch_existing_rows" and touch["transaction"] is None
        if connection.vendor == "sqlite":
            assert 0 < touch["lock_seconds"] < touch["seconds"]  # one statement or batch at a time, never all
    assert Path(report["backup"]).is_file()  # the disaster-recovery copy is kept, not put back
    assert_writer_rows_kept(writer)
    assert state() == before


@pytest.mark.django_db(transaction=True)
def test_success_applies_verifies_and_reports(migrate, tmp_path, writer):
    result = migrate("migrations_fixture", "0003", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok"
    assert [a["migration"] for a in report["applied"]] == [
        "migrations_fixture.0001_create_widget", "migrations_fixture.0002_touch_existing_rows",
        "migrations_fixture.0003_fail_on_demand",
    ]
    assert not [p for p in report["verification"] if p["severity"] == "error"]
    assert report["guard"] == "transaction"
    backup = Path(report["backup"])
    assert backup.suffix == (".sqlite3" if connection.vendor == "sqlite" else ".pgdump")
    assert backup.parent == tmp_path / "backups" and backup.stat().st_mode & 0o777 == 0o600
    assert 0 < report["longest_lock_seconds"] < report["seconds"]["total"]
    # Each migration's lock, measured as the rehearsal predicts it: the three share one transaction.
    applied = report["applied"]
    assert {a["transaction"] for a in applied} == {1}
    assert len({a["lock_seconds"] for a in applied}) == 1
    if connection.vendor == "sqlite":
        assert all(a["locks"] == ["database write lock"] for a in applied)
        assert applied[0]["lock_seconds"] >= sum(a["seconds"] for a in applied)  # all three, to the commit
    else:
        assert applied[0]["lock_seconds"] == 0  # a new table and row updates: no writer had to wait
    assert_writer_rows_kept(writer)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM songs_song WHERE title LIKE '%(touched)'")
        assert cursor.fetchone()[0] >= 4  # and the writer's songs committed before 0002
    assert not list(tmp_path.glob("migrate-in-progress-*"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("atomic", "sig"), [("1", signal.SIGINT), ("0", signal.SIGINT), ("0", signal.SIGTERM)],
                         ids=["atomic-ctrl-c", "non-atomic-ctrl-c", "non-atomic-sigterm"])
def test_ctrl_c_rolls_back_under_a_live_writer(migrate, fixture_env, tmp_path, writer, atomic, sig):
    before = state()
    env = dict(fixture_env, SONGSGEN_FIXTURE_ATOMIC=atomic)
    proc = hanging_migrate(env, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert ("Ctrl-C" if sig == signal.SIGINT else "SIGTERM") in err
    assert "migrations_fixture.0003_fail_on_demand" in err
    assert_writer_rows_kept(writer)
    assert state() == before


@pytest.mark.django_db(transaction=True)
def test_sigkill_in_a_transaction_then_the_next_run_carries_on(migrate, fixture_env, tmp_path, writer):
    before = state()
    killed_half_way(fixture_env, tmp_path)
    assert state() == before  # the open transaction died with the process
    again = migrate("migrations_fixture", "0003")
    assert again.returncode == 0, again.stderr
    assert "interrupted before it committed a migration" in again.stdout
    assert_writer_rows_kept(writer)
    assert not list(tmp_path.glob("migrate-in-progress-*"))


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_non_atomic_plan_then_resume_restore(migrate, fixture_env, tmp_path, writer):
    before = state()
    killed_half_way(fixture_env, tmp_path, **NON_ATOMIC)
    assert state() != before  # 0001 and 0002 committed before the non-atomic 0003 began
    again = migrate("migrations_fixture", "0003", extra_env=NON_ATOMIC)
    assert again.returncode == 2 and "--resume-restore" in again.stderr and "interrupted" in again.stderr
    assert "migrations_fixture.0002_touch_existing_rows" in again.stderr
    restored = migrate("--resume-restore")
    assert restored.returncode == 0, restored.stderr
    assert "back as it was" in restored.stdout and "rows written since are kept" in restored.stdout
    assert_writer_rows_kept(writer)
    assert state() == before
    assert not list(tmp_path.glob("migrate-in-progress-*"))


@pytest.mark.django_db(transaction=True)
def test_resume_restore_from_snapshot_needs_the_word(migrate, fixture_env, tmp_path, rows):
    before = state()
    killed_half_way(fixture_env, tmp_path, **NON_ATOMIC)
    restored = migrate("--resume-restore", "--from-snapshot", "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["status"] == "snapshot-restored"
    assert state() == before


@sqlite_only
@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_not_enough_room_is_refused_before_anything_changes(migrate, tmp_path):
    before = state()
    result = migrate("migrations_fixture", "0003", extra_env={"SONGSGEN_MIGRATE_BACKUP_MARGIN_MB": str(10**9)})
    assert result.returncode == 2
    assert "Not enough room for the backup" in result.stderr and "Nothing was changed" in result.stderr
    assert state() == before
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


@pytest.mark.usefixtures("rows")
@pytest.mark.django_db(transaction=True)
def test_json_stdout_is_the_report_alone_when_a_migration_prints(migrate):
    # songs 0003 and 0004 print their backfill's progress; with --json that goes to stderr.
    assert migrate("songs", "0002", "--plain", "-v0").returncode == 0
    try:
        result = migrate("songs", "--json")
        assert result.returncode == 0, result.stderr
        assert "backfill songs_song: up to id" in result.stderr
        report = json.loads(result.stdout)
        assert report["status"] == "ok"
        assert [a["migration"] for a in report["applied"]][:2] == [
            "songs.0003_backfill_song_analytics_data", "songs.0004_create_song_search_index"]
        assert all(a["transaction"] is None and "lock_seconds" in a for a in report["applied"])  # non-atomic
        # No grouped transaction: the longest wait is a migration's own (on SQLite the index build's statement).
        longest = max(a["lock_seconds"] for a in report["applied"])
        assert report["longest_lock_seconds"] == longest
        assert longest > 0 or connection.vendor == "postgresql"  # CONCURRENTLY blocks no writer
    finally:
        assert migrate("--plain", "-v0").returncode == 0


@pytest.mark.django_db(transaction=True)
def test_django_options_still_work(migrate):
    plan = migrate("--plan")
    assert plan.returncode == 0 and "migrations_fixture.0001_create_widget" in plan.stdout
    check = migrate("--check")
    assert check.returncode == 1  # Django's own "unapplied migrations" exit
    fake = migrate("migrations_fixture", "0001", "--fake", "--json")
    # Faked but the table is not there: verification catches it and the migration record is undone.
    assert fake.returncode == 1 and json.loads(fake.stdout)["status"] == "restored"


@pytest.mark.django_db
def test_verify_checks_integrity_of_the_tables_the_plan_touched():
    from django.db.migrations.executor import MigrationExecutor

    from songsgen.db.migrate.verify import touched_tables

    executor = MigrationExecutor(connection)
    state = executor.loader.project_state()
    create_event = executor.loader.get_migration("accounts", "0002_create_user_event")
    genre_index = executor.loader.get_migration("songs", "0005_add_song_genre_index")
    backfill = executor.loader.get_migration("songs", "0003_backfill_song_analytics_data")
    assert touched_tables([(create_event, False), (genre_index, False)], state) == {
        "accounts_userevent", "songs_song"
    }
    assert touched_tables([(backfill, False)], state) is None  # RunPython: any table, so all are checked
