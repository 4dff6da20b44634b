"""`migrate --rehearse` machinery (songsgen/db/migrate/rehearse.py) on real snapshots, a real file or a real server.

The plan rehearsed is the test-only app tests/migrations_fixture (installed in a subprocess only, through
tests/settings_fixture.py): 0001 creates a table, 0002 adds a column to it and updates every song (the
first 10,000), 0003 inserts one row and fails or hangs on demand. The live test database never gets those migrations.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from songsgen.db.exceptions import RehearsalError
from songsgen.db.migrate.rehearse import Rehearsal, RehearsedStep, format_report, rehearse
from songsgen.db.migrate.snapshot import take_snapshot
from tests import sigint
from tests.conftest import REPO
from tests.db.dbstate import database_state
from tests.factories import make_song, make_user

pg_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL roles and locks")
FIXTURE = [
    ["migrations_fixture", "0001_create_widget", False],
    ["migrations_fixture", "0002_touch_existing_rows", False],
    ["migrations_fixture", "0003_fail_on_demand", False],
]
SONGS = 4


@pytest.fixture
def snapshot(transactional_db, tmp_path) -> Path:
    """A pre-migrate snapshot of the test database holding a user and SONGS songs."""
    user = make_user()
    for i in range(SONGS):
        make_song(user=user, title=f"keep {i}")
    return take_snapshot(connection, tmp_path / "snapshots")


@pytest.fixture
def child(subprocess_env, snapshot):
    """Start `python -m tests.db.rehearse_child` on the snapshot with the fixture app installed."""

    def start(extra_env: dict[str, str] | None = None, plan: list | None = None) -> subprocess.Popen:
        env = dict(subprocess_env, DJANGO_SETTINGS_MODULE="tests.settings_fixture", **(extra_env or {}))
        return sigint.popen(
            [sys.executable, "-m", "tests.db.rehearse_child", str(snapshot), json.dumps(plan or FIXTURE)],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    return start


def run(child, extra_env: dict[str, str] | None = None, plan: list | None = None) -> dict:
    """The Rehearsal the child printed (and under "statements" its trace), once it has checked that its
    scratch alias is gone."""
    proc = child(extra_env, plan)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    printed = json.loads(out.splitlines()[-1])  # a migration may print its progress before
    assert printed["aliases"] == ["default"]
    return {**printed["rehearsal"], "statements": printed["statements"]}


def live_state() -> object:
    """SQLite: the bytes of the file and its WAL; PostgreSQL: schema and per-table row checksums."""
    connection.close()  # nothing of ours holds the file open while it is compared
    if connection.vendor == "postgresql":
        return database_state(connection)
    path = Path(connection.settings_dict["NAME"])
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
            for p in (path, Path(f"{path}-wal"))]


def leftovers(snapshot: Path) -> list[str]:
    """Scratch copies still there: files beside the snapshot, or databases on the server."""
    if connection.vendor == "sqlite":
        return [p.name for p in snapshot.parent.iterdir() if p != snapshot]
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'songsgen\\_rehearse\\_%'")
        return [row[0] for row in cursor.fetchall()]


def test_each_migration_is_measured_on_a_copy(child, snapshot):
    before = live_state()
    result = run(child)
    assert live_state() == before
    assert leftovers(snapshot) == []
    assert result["ok"], result
    assert not [p for p in result["verification"] if p["severity"] == "error"]
    steps = {step["migration"].split(".")[1]: step for step in result["steps"]}
    assert list(steps) == [name for _app, name, _back in FIXTURE]
    assert all(step["seconds"] > 0 and step["error"] is None for step in steps.values())
    # 0001 creates an empty table; 0002 updates every song and inserts a widget; 0003 inserts a widget.
    assert [step["rows"] for step in steps.values()] == [0, SONGS + 1, 1]
    # All three are atomic: one transaction, as the live migrate runs them, and each reports its hold.
    assert {step["transaction"] for step in steps.values()} == {1}
    assert len({step["lock_seconds"] for step in steps.values()}) == 1
    assert result["longest_lock_seconds"] == steps["0001_create_widget"]["lock_seconds"]
    if connection.vendor == "sqlite":
        for step in steps.values():
            assert step["locks"] == ["database write lock"]
        # The write lock spans the three migrations and the verification after them, to the commit.
        assert steps["0001_create_widget"]["lock_seconds"] >= sum(step["seconds"] for step in steps.values())
    else:
        created, altered = steps["0001_create_widget"], steps["0002_touch_existing_rows"]
        assert "migrations_fixture_widget: AccessExclusiveLock (new)" in created["locks"]
        # The table 0001 created in this same transaction is new to 0002 too; the songs only get ROW EXCLUSIVE:
        # no writer of a table that existed before waits for this plan.
        assert "migrations_fixture_widget: AccessExclusiveLock (new)" in altered["locks"]
        assert "songs_song: RowExclusiveLock" in altered["locks"]
        assert all(step["lock_seconds"] == 0 for step in steps.values())


def test_non_atomic_migration_holds_the_lock_per_statement(child, snapshot):
    result = run(child, {"SONGSGEN_FIXTURE_ATOMIC": "0"})
    assert result["ok"], result
    step = result["steps"][-1]
    assert step["migration"] == "migrations_fixture.0003_fail_on_demand" and step["rows"] == 1
    if connection.vendor == "sqlite":
        assert step["locks"] == ["database write lock"]
        assert 0 < step["lock_seconds"] < step["seconds"]  # the INSERT alone, not the whole migration
    else:
        assert step["lock_seconds"] == 0  # a plain INSERT takes RowExclusiveLock, which blocks no writer
    assert leftovers(snapshot) == []


def test_a_failing_migration_is_reported_and_the_copy_removed(child, snapshot):
    before = live_state()
    result = run(child, {"SONGSGEN_FIXTURE_MODE": "fail"})
    assert not result["ok"]
    assert [step["error"] for step in result["steps"][:2]] == [None, None]
    failed = result["steps"][2]
    assert failed["migration"] == "migrations_fixture.0003_fail_on_demand"
    assert "injected failure half-way" in failed["error"]
    assert result["verification"] == []
    assert live_state() == before
    assert leftovers(snapshot) == []


def test_ctrl_c_removes_the_copy(child, snapshot, tmp_path):
    before = live_state()
    flag = tmp_path / "flag"
    proc = child({"SONGSGEN_FIXTURE_MODE": "hang", "SONGSGEN_FIXTURE_FLAG": str(flag)})
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    scratch = leftovers(snapshot)
    assert len(scratch) >= 1  # the copy exists while the migration runs
    if connection.vendor == "sqlite":
        copy = next(p for p in snapshot.parent.iterdir() if p.name.endswith(".sqlite3") and p != snapshot)
        assert copy.stat().st_mode & 0o777 == 0o600
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert leftovers(snapshot) == []
    assert live_state() == before


def test_backwards_plan(child, snapshot):
    before = live_state()
    result = run(child, plan=[["songs", "0005_add_song_genre_index", True]])
    assert result["ok"], result
    [step] = result["steps"]
    assert step["migration"] == "songs.0005_add_song_genre_index" and step["rows"] == 0 and step["error"] is None
    assert step["transaction"] is None  # non-atomic: its statements commit one by one
    if connection.vendor == "sqlite":
        assert step["locks"] == ["database write lock"] and step["lock_seconds"] > 0  # the DROP INDEX
    else:
        assert step["lock_seconds"] == 0  # DROP INDEX CONCURRENTLY blocks no writer
    assert live_state() == before
    assert leftovers(snapshot) == []


# Atomic, and it changes a table that exists before the plan (SQLite rebuilds it; PostgreSQL drops its columns).
ATOMIC_BACKWARDS = [["queueing", "0003_add_job_generation_timeout", True]]  # the newest: nothing depends on it


def test_the_lock_counts_to_the_commit_with_the_verification_inside(child, snapshot):
    # As live: the migration's lock is held through the verification that runs before the commit.
    result = run(child, {"REHEARSE_TRACE": "1"}, plan=ATOMIC_BACKWARDS)
    assert result["ok"], result
    [step] = result["steps"]
    assert step["transaction"] == 1 and step["lock_seconds"] > 0
    assert "database write lock" in step["locks"] or "queueing_generationqueue: AccessExclusiveLock" in step["locks"]
    inside = [s for s in result["statements"] if s["atomic"]]
    ddl = next(s for s in inside if s["sql"].lstrip().upper().startswith(("ALTER", "DROP", "CREATE")))
    unrecorded = max(i for i, s in enumerate(inside) if s["sql"].startswith('DELETE FROM "django_migrations"'))
    assert inside[unrecorded + 1:]  # verification's queries, after the migration, inside its transaction
    assert step["lock_seconds"] >= inside[-1]["end"] - ddl["end"]


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's deferred foreign-key check")
def test_the_lock_has_no_whole_database_foreign_key_check(child, snapshot):
    # Django's SQLite schema editor checks every foreign key of the database after each migration; on a big
    # database that is seconds under the write lock, which the live migrate never pays, so neither may the
    # rehearsal: only the tables the plan changes (and small ones) are checked, once, before the commit.
    env = {"REHEARSE_TRACE": "1", "SONGSGEN_MIGRATE_BIG_TABLE_ROWS": "1"}  # any table holding a row is big
    result = run(child, env, plan=ATOMIC_BACKWARDS)
    assert result["ok"], result
    checks = [s for s in result["statements"] if "FOREIGN_KEY_CHECK" in s["sql"].upper()]
    assert checks and all(s["atomic"] for s in checks)
    assert "PRAGMA foreign_key_check" not in {s["sql"] for s in checks}  # the whole database: never
    checked = {s["sql"].split("(", 1)[1].strip('")') for s in checks}
    assert "queueing_generationqueue" in checked  # the table the plan changes
    assert not checked & {"songs_song", "accounts_user", "auth_permission"}  # tables with rows it does not touch


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's deferred foreign-key check")
def test_a_transaction_checks_its_own_tables_when_the_plan_also_runs_code(child, snapshot):
    # Two atomic migrations share a transaction, then non-atomic ones follow, one of them code (a backfill's
    # reverse) that may touch any table. The transaction's foreign-key check, under the write lock, covers
    # what its own migrations changed: not the whole database for the sake of a later step that commits
    # on its own (at 1M songs that check held the lock 10 s and a writer got "database is locked").
    env = {"REHEARSE_TRACE": "1", "SONGSGEN_MIGRATE_BIG_TABLE_ROWS": "1"}
    plan = [["queueing", "0003_add_job_generation_timeout", True], ["queueing", "0002_add_lease_and_backoff", True],
            ["songs", "0005_add_song_genre_index", True], ["songs", "0004_create_song_search_index", True],
            ["songs", "0003_backfill_song_analytics_data", True]]
    result = run(child, env, plan=plan)
    assert result["ok"], result
    assert [s["transaction"] for s in result["steps"]] == [1, 1, None, None, None]
    inside = [s["sql"] for s in result["statements"] if s["atomic"] and "FOREIGN_KEY_CHECK" in s["sql"].upper()]
    assert inside and "PRAGMA foreign_key_check" not in inside
    checked = {sql.split("(", 1)[1].strip('")') for sql in inside}
    assert "queueing_generationqueue" in checked and "songs_song" not in checked
    outside = [s["sql"] for s in result["statements"] if not s["atomic"] and "FOREIGN_KEY_CHECK" in s["sql"].upper()]
    assert "PRAGMA foreign_key_check" in outside  # the whole plan's check still runs, after the commit


def test_format_report_is_a_table():
    steps = [
        RehearsedStep("songs.0006_x", 1.5, 0.25, ["songs_song: AccessExclusiveLock"], 12),
        RehearsedStep("songs.0007_y", 0.1, 0.0, [], 0, error="RuntimeError: boom"),
    ]
    lines = format_report(Rehearsal(steps=steps, seconds=2.0, verification=[], ok=False))
    assert lines[0].split() == ["migration", "time", "lock", "held", "rows", "locks"]
    assert lines[1].split() == ["songs.0006_x", "1.500", "s", "0.250", "s", "12", "songs_song:", "AccessExclusiveLock"]
    assert lines[1].index("1.500") == lines[0].index("time")
    assert "FAILED songs.0007_y: RuntimeError: boom" in lines
    assert lines[-1].startswith("Rehearsal FAILED in 2.00 s")


@pg_only
def test_role_without_createdb_is_told_so(snapshot):
    from django.db.backends.postgresql.base import DatabaseWrapper

    with connection.cursor() as cursor:
        cursor.execute("CREATE ROLE rehearse_nocreatedb LOGIN PASSWORD 'pw' NOCREATEDB")
    try:
        weak = DatabaseWrapper({**connection.settings_dict, "USER": "rehearse_nocreatedb", "PASSWORD": "pw"}, "weak")
        with pytest.raises(RehearsalError, match="may not create databases.*CREATEDB"):
            rehearse(weak, snapshot, [tuple(key) for key in FIXTURE])
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP ROLE rehearse_nocreatedb")
    assert leftovers(snapshot) == []


@pg_only
def test_the_scratch_copy_is_vacuumed_and_analyzed_before_the_plan(snapshot):
    """A freshly restored copy would have autovacuum start on every table, and a migration's DDL queue behind it:
    lock time the live database, where autovacuum keeps up, does not have."""
    import psycopg

    from songsgen.db import pgconn
    from songsgen.db.migrate.rehearse import _scratch_postgres

    with _scratch_postgres(connection.settings_dict, snapshot) as name:
        params = pgconn.connect_params(connection.settings_dict, name)
        with psycopg.connect(**params) as scratch:
            found = scratch.execute(
                "SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL, n_mod_since_analyze, n_ins_since_vacuum "
                "FROM pg_stat_user_tables WHERE relname = 'songs_song'").fetchone()
            assert scratch.execute("SELECT count(*) FROM songs_song").fetchone()[0] == SONGS
    assert found == (True, True, 0, 0)
    assert leftovers(snapshot) == []


@pg_only
def test_the_rehearsal_session_has_autovacuum_yield_as_the_live_one_does(child, snapshot):
    result = run(child, {"REHEARSE_TRACE": "1"})
    assert result["ok"], result
    sql = [s["sql"] for s in result["statements"]]
    first_ddl = next(i for i, text in enumerate(sql) if text.startswith("CREATE TABLE"))
    assert any(text.startswith("SET deadlock_timeout") for text in sql[:first_ddl]), sql[:first_ddl]
