"""The safety checks flag each class of unsafe operation, and pass the project's own migrations."""

from __future__ import annotations

from dataclasses import replace

import pytest
from django.contrib.postgres.operations import AddConstraintNotValid, AddIndexConcurrently
from django.db import connection, models
from django.db.migrations import Migration, operations
from django.db.migrations.executor import MigrationExecutor

from songsgen.db.safety import FIXES, LINTER_FIX, check_plan, finding, finding_dict, finding_line, linter_findings
from songsgen.db.squawk import migration_sql
from tests.factories import make_song

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL locking checks")


def _codes(*ops, big: bool = False, settings=None) -> list[str]:
    if big:
        settings.MIGRATE_BIG_TABLE_ROWS = 1
        make_song()
    migration = Migration("0999_probe", "songs")
    migration.operations = list(ops)
    state = MigrationExecutor(connection)._create_project_state(with_applied_migrations=True)
    return [f.code for f in check_plan(connection, [(migration, False)], state, use_linter=False, use_squawk=False)]


UNSAFE = [
    ("DROP_COLUMN", lambda: [operations.RemoveField("song", "lyrics")], False),
    ("DROP_TABLE", lambda: [operations.DeleteModel("song")], False),
    ("RENAME_COLUMN", lambda: [operations.RenameField("song", "lyrics", "words")], False),
    ("RENAME_TABLE", lambda: [operations.RenameModel("song", "track")], False),
    ("RENAME_TABLE", lambda: [operations.AlterModelTable("song", "tracks")], False),
    ("NOT_NULL", lambda: [operations.AddField("song", "mood", models.CharField(max_length=9, default="x"))], False),
    ("NOT_NULL", lambda: [operations.AlterField("song", "suno_song_id", models.CharField(max_length=100))], False),
    ("ADD_UNIQUE", lambda: [operations.AddConstraint(
        "song", models.UniqueConstraint(fields=["title"], name="songs_title_uniq"))], True),
    ("ADD_UNIQUE", lambda: [operations.AlterField("song", "title", models.CharField(max_length=200, unique=True))],
     True),
]


@pytest.mark.parametrize(("code", "ops", "big"), UNSAFE, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(UNSAFE)])
@pytest.mark.django_db
def test_flags_unsafe_operation(code, ops, big, settings):
    assert code in _codes(*ops(), big=big, settings=settings)


SAFE = [
    lambda: [operations.AddField("song", "mood", models.CharField(max_length=9, null=True))],
    lambda: [operations.AddField("song", "mood", models.CharField(max_length=9, db_default="calm"))],
    lambda: [operations.AddConstraint("song", models.UniqueConstraint(fields=["title"], name="songs_title_uniq"))],
    lambda: [operations.CreateModel("Probe", [("id", models.BigAutoField(primary_key=True))]),
             operations.AddField("probe", "n", models.IntegerField()),
             operations.RemoveField("probe", "n")],
]


@pytest.mark.parametrize("ops", SAFE)
@pytest.mark.django_db
def test_passes_safe_operations(ops, settings):
    # Not big: unique on a small table is fine; a table created in the plan may be changed at will.
    assert _codes(*ops(), settings=settings) == []


@postgres_only
@pytest.mark.django_db
def test_flags_postgres_locking_operations(settings):
    index = models.Index(fields=["genre"], name="songs_genre_probe")
    check = models.CheckConstraint(condition=models.Q(play_count__lt=10**9), name="songs_probe_check")
    assert "INDEX_NOT_CONCURRENT" in _codes(operations.AddIndex("song", index), big=True, settings=settings)
    assert "CONSTRAINT_NOT_VALID" in _codes(operations.AddConstraint("song", check), settings=settings)
    assert "COLUMN_TYPE_REWRITE" in _codes(
        operations.AlterField("song", "play_count", models.BigIntegerField(default=0)), settings=settings)
    assert _codes(AddIndexConcurrently("song", index), settings=settings) == []
    assert _codes(AddConstraintNotValid("song", check), settings=settings) == []
    # Widening a varchar does not rewrite the table.
    assert _codes(operations.AlterField("song", "title", models.CharField(max_length=300)), settings=settings) == []


@pytest.mark.django_db(transaction=True)  # sqlmigrate needs SQLite outside a transaction
def test_project_migrations_pass():
    """Every migration of the project, as if applied to a database holding the ones before it."""
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    ours = [key for leaf in graph.leaf_nodes() for key in graph.forwards_plan(leaf)
            if key[0] in ("accounts", "songs", "queueing")]
    blocking = []
    for key in dict.fromkeys(ours):
        migration = executor.loader.get_migration(*key)
        state = executor.loader.project_state(key, at_end=False)
        own = check_plan(connection, [(migration, False)], state, use_linter=False, use_squawk=False)
        sql = migration_sql(connection, migration, state)
        linted = [] if migration.initial else linter_findings(connection, migration, sql)
        blocking += [f for f in own + linted if f.blocking]
    assert blocking == []


def test_a_finding_prints_and_serialises_in_migrates_shape():
    """A finding is a Problem about a migration; migrate prints it, and --json lists it, under its own words."""
    found = replace(finding("DROP_COLUMN", "songs.0009_x", "drops column song.mood", "songsgen"),
                    agreed=("squawk:ban-drop-column",))
    assert found.subject == "songs.0009_x" and found.fix == FIXES["DROP_COLUMN"]
    assert finding_line(found) == (
        "UNSAFE DROP_COLUMN in songs.0009_x: drops column song.mood (also squawk:ban-drop-column)\n"
        f"    fix: {FIXES['DROP_COLUMN']}")
    assert finding_dict(found) == {
        "code": "DROP_COLUMN", "migration": "songs.0009_x", "detail": "drops column song.mood",
        "source": "songsgen", "blocking": True, "agreed": ["squawk:ban-drop-column"], "fix": FIXES["DROP_COLUMN"]}
    note = finding("CREATE_INDEX", "songs.0009_x", "CREATE INDEX locks table", "django-migration-linter", False)
    assert finding_line(note).startswith("note CREATE_INDEX in songs.0009_x: ") and note.fix == LINTER_FIX


sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock and foreign_key_check")


def _songs_0002():
    executor = MigrationExecutor(connection)
    key = ("songs", "0002_add_song_analytics_data")
    return executor.loader.get_migration(*key), executor.loader.project_state(key, at_end=False)


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_judging_a_migration_leaves_writers_alone():
    """Reading a migration's SQL takes no write lock: another process holding it does not stop the check (and
    the check would not stop that process's writes). Django's sqlmigrate begins IMMEDIATE on SQLite."""
    import sqlite3

    migration, state = _songs_0002()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 300")  # a wait for the lock fails fast instead of after 10 s
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a writer in the middle of its transaction
        found = check_plan(connection, [(migration, False)], state, use_squawk=False)
    finally:
        other.execute("ROLLBACK")
        other.close()
        connection.close()
    assert not [f for f in found if f.blocking]


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_judging_a_migration_does_not_run_a_whole_database_foreign_key_check():
    """Django's SQLite schema editor checks every foreign key on leaving, even when it only collects SQL: seconds
    at 1M rows, and an IntegrityError over rows the migration never touches."""
    import sqlite3

    make_song(title="orphan")
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        other.execute("UPDATE songs_song SET user_id = 987654")  # foreign_keys is off on this plain connection
    finally:
        other.close()
    migration, state = _songs_0002()
    assert linter_findings(connection, migration, migration_sql(connection, migration, state)) == []
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA foreign_key_check(songs_song)")
        assert cursor.fetchall()  # the orphan is there: the check above simply did not look
