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
pg_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL locking")
NON_ATOMIC = {"SONGSGEN_FIXTURE_ATOMIC": "0"}


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
    make_user(username="live-writer")


def _state():
    """Schema and every row that existed before the test's writer started (its own rows are checked apart)."""
    connection.close()  # read what is on disk now, not a cached view
    state = database_state(connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, title, play_count FROM songs_song WHERE title NOT LIKE 'live %' ORDER BY id")
        kept = cursor.fetchall()
    # The writer's songs reach the songs table, its search index (songs_song_search*) and the queue.
    state["rows"] = {t: v for t, v in state["rows"].items()
                     if not t.startswith("songs_song") and t != "queueing_generationqueue"}
    return state, kept


class LiveWriter:
    """The application, writing through the migrate: a real process committing songs the whole time."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.out, self.stop_file = folder / "writer.log", folder / "writer.stop"
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.db.live_writer", str(self.out), str(self.stop_file)],
                                     env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        self.wait_for_commits(3)

    def lines(self) -> list[list[str]]:
        return [line.split("\t") for line in self.out.read_text().splitlines()] if self.out.exists() else []

    def wait_for_commits(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len([x for x in self.lines() if x[0] != "ERROR"]) < n:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else "writer died"
            assert time.monotonic() < deadline, "the writer committed nothing"
            time.sleep(0.05)

    def stop(self) -> tuple[dict[int, str], list[str], float]:
        """(id → title of every commit it was told of, errors, longest wait in seconds)."""
        seen = len(self.lines())
        self.wait_for_commits(seen + 3)  # it goes on writing after the migrate
        self.stop_file.write_text("stop")
        self.proc.wait(timeout=60)
        committed: dict[int, str] = {}
        errors, longest = [], 0.0
        for fields in self.lines():
            if fields[0] == "ERROR":
                errors.append(fields[1])
                continue
            assert int(fields[0]) not in committed, f"id {fields[0]} handed out twice"
            committed[int(fields[0])] = fields[1]
            longest = max(longest, float(fields[2]))
        return committed, errors, longest


def assert_writer_rows_kept(writer: LiveWriter) -> None:
    """Every row the writer committed is there, under its own id: none lost, no id reused."""
    committed, errors, _longest = writer.stop()
    assert not errors, errors[:3]
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, title FROM songs_song WHERE title LIKE 'live %'")
        present = dict(cursor.fetchall())
    # The fixture's 0002 appends " (touched)" to every title: a row it reached is changed, not lost.
    missing = {pk: t for pk, t in committed.items() if present.get(pk) not in (t, f"{t} (touched)")}
    assert not missing, f"{len(missing)} of {len(committed)} committed rows lost or overwritten: {list(missing)[:5]}"


@pytest.fixture
def writer(fixture_env, tmp_path, rows):
    live = LiveWriter(fixture_env, tmp_path)
    yield live
    if live.proc.poll() is None:
        live.proc.kill()
        live.proc.wait()


@pytest.mark.django_db(transaction=True)
# A verification failure after a non-atomic plan is left out: reverse operations cannot run on a schema that
# does not match the migrations (that run ends in exit 3 and the snapshot advice).
@pytest.mark.parametrize(("mode", "atomic"), [("fail", "1"), ("fail", "0"), ("verify", "1")])
def test_failure_under_a_live_writer_keeps_every_row(migrate, writer, mode, atomic):
    before = _state()
    result = migrate("migrations_fixture", "0003", "--json",
                     extra_env={"SONGSGEN_FIXTURE_MODE": mode, "SONGSGEN_FIXTURE_ATOMIC": atomic})
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "restored"
    assert "back as it was" in result.stderr and "Rows other connections committed meanwhile are kept" in result.stderr
    if mode == "fail":
        assert "migrations_fixture.0003_fail_on_demand" in result.stderr
        assert "injected failure half-way" in result.stderr
    else:
        assert report["error"].startswith("verify failed")
        assert any("column note is missing" in p["detail"] for p in report["verification"])
    if atomic == "1":
        assert report["guard"] == "transaction" and report["unapplied"] == []
    else:
        assert report["guard"] == "transaction+reverse"
        assert report["unapplied"] == ["migrations_fixture.0002_touch_existing_rows",
                                       "migrations_fixture.0001_create_widget"]
    assert Path(report["backup"]).is_file()  # the disaster-recovery copy is kept, not put back
    assert_writer_rows_kept(writer)
    assert _state() == before


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
    assert_writer_rows_kept(writer)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM songs_song WHERE title LIKE '%(touched)'")
        assert cursor.fetchone()[0] >= 4  # and the writer's songs committed before 0002
    assert not list(tmp_path.glob("migrate-in-progress-*"))


def _hanging_migrate(fixture_env, tmp_path, *args: str, hang: float = 120, **popen) -> subprocess.Popen:
    """`migrate migrations_fixture 0003` in a subprocess, returned once its last migration hangs half-way."""
    flag = tmp_path / f"flag-{time.monotonic_ns()}"
    env = dict(fixture_env, SONGSGEN_FIXTURE_MODE="hang", SONGSGEN_FIXTURE_FLAG=str(flag),
               SONGSGEN_FIXTURE_HANG=str(hang))
    proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "migrate", "migrations_fixture", "0003", *args],
                            env=env, cwd=REPO, **popen)
    _wait_for(flag, proc)
    return proc


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("atomic", ["1", "0"], ids=["atomic", "non-atomic"])
def test_ctrl_c_rolls_back_under_a_live_writer(migrate, fixture_env, tmp_path, writer, atomic):
    before = _state()
    env = dict(fixture_env, SONGSGEN_FIXTURE_ATOMIC=atomic)
    proc = _hanging_migrate(env, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Ctrl-C" in err and "migrations_fixture.0003_fail_on_demand" in err
    assert_writer_rows_kept(writer)
    assert _state() == before


@pytest.mark.django_db(transaction=True)
def test_sigkill_in_a_transaction_then_the_next_run_carries_on(migrate, fixture_env, tmp_path, writer):
    before = _state()
    proc = _hanging_migrate(fixture_env, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(0.5)  # PostgreSQL notices the dead client and rolls its transaction back
    assert _state() == before  # the open transaction died with the process
    again = migrate("migrations_fixture", "0003")
    assert again.returncode == 0, again.stderr
    assert "interrupted before it committed a migration" in again.stdout
    assert_writer_rows_kept(writer)
    assert not list(tmp_path.glob("migrate-in-progress-*"))


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_non_atomic_plan_then_resume_restore(migrate, fixture_env, tmp_path, writer):
    before = _state()
    proc = _hanging_migrate(dict(fixture_env, **NON_ATOMIC), tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(0.5)
    assert _state() != before  # 0001 and 0002 committed before the non-atomic 0003 began
    again = migrate("migrations_fixture", "0003", extra_env=NON_ATOMIC)
    assert again.returncode == 2 and "--resume-restore" in again.stderr and "interrupted" in again.stderr
    assert "migrations_fixture.0002_touch_existing_rows" in again.stderr
    restored = migrate("--resume-restore")
    assert restored.returncode == 0, restored.stderr
    assert "back as it was" in restored.stdout and "rows written since are kept" in restored.stdout
    assert_writer_rows_kept(writer)
    assert _state() == before
    assert not list(tmp_path.glob("migrate-in-progress-*"))


@pytest.mark.django_db(transaction=True)
def test_two_migrates_at_once_one_runs_the_other_refuses(migrate, fixture_env, tmp_path, rows):
    # The first hangs in its non-atomic 0003: it holds the migrate lock but not SQLite's write lock, so the
    # second starts up (Django's own start-up checks open a write transaction on SQLite) and meets the lock.
    first = _hanging_migrate(dict(fixture_env, **NON_ATOMIC), tmp_path, "--json", hang=10,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM songs_song WHERE title LIKE '%(touched)'")
        assert cursor.fetchone()[0] == 4  # applied once, by the first, and never undone


@pytest.mark.django_db(transaction=True)
def test_resume_restore_from_snapshot_needs_the_word(migrate, fixture_env, tmp_path, rows):
    before = _state()
    proc = _hanging_migrate(dict(fixture_env, **NON_ATOMIC), tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(0.5)
    restored = migrate("--resume-restore", "--from-snapshot", "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["status"] == "snapshot-restored"
    assert _state() == before


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
