"""`migrate --rehearse-only` cannot reach the live database, whichever way a data migration reaches `default`.

tests/rehearse_fixture (installed in the subprocesses only, through tests/settings_rehearse.py) creates a table,
then writes songs through the default manager (0002: pop +7), `django.db.connection`'s alias (0003: rock +3), a
raw `connection.cursor()` (0004: jazz +5) and the default manager inside `transaction.atomic()` without `using`
(0005: folk +11), and reads the table 0001 created (0006). Real `manage.py migrate` processes on the test
database: the SQLite file, or the PostgreSQL server.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from django.db import connection

from tests.db.conftest import app_env, run_migrate
from tests.db.dbstate import database_state
from tests.factories import make_song, make_user

ADDED = {"pop": 7, "rock": 3, "jazz": 5, "folk": 11}  # what each data migration adds to its genre's songs
PER_GENRE = 3
APP = "rehearse_fixture"


@pytest.fixture
def rehearse_env(subprocess_env, tmp_path) -> dict[str, str]:
    return app_env(subprocess_env, tmp_path, "tests.settings_rehearse")


@pytest.fixture
def migrate(rehearse_env):
    """Run the safe migrate (typed, as a user would) in a subprocess with the fixture app installed."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return run_migrate(rehearse_env, *args, timeout=300)

    yield run
    run(APP, "zero", "--plain", "-v0")


@pytest.fixture
def songs(transactional_db) -> None:
    user = make_user()
    for genre in [*ADDED, "ambient"]:  # ambient: no migration touches it
        for i in range(PER_GENRE):
            make_song(user=user, genre=genre, title=f"{genre} {i}")


def live_state() -> object:
    """SQLite: the file's bytes once its WAL is checkpointed into it; PostgreSQL: schema and every table's rows."""
    connection.close()
    if connection.vendor == "postgresql":
        return database_state(connection)
    path = Path(connection.settings_dict["NAME"])
    with closing(sqlite3.connect(path)) as db:
        busy, _frames, _done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    return hashlib.sha256(path.read_bytes()).hexdigest()


def play_counts() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT genre, SUM(play_count) FROM songs_song GROUP BY genre")
        return {genre: int(total) for genre, total in cursor.fetchall()}


# Up to 0005 the plan reads nothing it created: a rehearsal that wrote to the live database would still pass.
WHOLE, WRITES_ONLY = [], [APP, "0005"]


@pytest.mark.parametrize("target", [WHOLE, WRITES_ONLY], ids=["whole-plan", "writes-only"])
def test_rehearse_only_leaves_the_live_database_byte_for_byte(migrate, songs, target):
    before = live_state()
    result = migrate(*target, "--rehearse-only", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "rehearsed"
    assert live_state() == before
    rehearsal = report["rehearsal"]
    assert rehearsal["ok"], rehearsal
    rows = {step["migration"].split(".")[1]: step["rows"] for step in rehearsal["steps"]}
    # Each write landed on the copy, where the rehearsal counts it (the live database would count 0 there).
    expected = {"0001_create_ledger": 1, "0002_default_manager": PER_GENRE, "0003_global_connection": PER_GENRE,
                "0004_raw_cursor": PER_GENRE, "0005_atomic_without_using": PER_GENRE, "0006_read_earlier_table": 1}
    assert rows == (expected if target == WHOLE else {k: v for k, v in expected.items() if not k.startswith("0006")})
    with connection.cursor() as cursor:
        assert "rehearse_fixture_ledger" not in connection.introspection.table_names(cursor)


@pytest.mark.parametrize("target", [WHOLE, WRITES_ONLY], ids=["whole-plan", "writes-only"])
def test_rehearse_then_apply_runs_each_data_migration_once(migrate, songs, target):
    result = migrate(*target, "--rehearse", "--noinput")
    assert result.returncode == 0, result.stderr
    assert "Rehearsal ok" in result.stdout and "Result: ok" in result.stdout
    assert play_counts() == {**{genre: n * PER_GENRE for genre, n in ADDED.items()}, "ambient": 0}
    with connection.cursor() as cursor:
        cursor.execute("SELECT step, amount FROM rehearse_fixture_ledger ORDER BY id")
        ledger = cursor.fetchall()
    # 0006 ran once, and saw 0001's row
    assert ledger == ([("created", 1), ("read", 1)] if target == WHOLE else [("created", 1)])
