"""The safety checks flag each class of unsafe operation, and pass the project's own migrations."""

from __future__ import annotations

from dataclasses import replace

import pytest
from django.contrib.postgres.operations import AddConstraintNotValid, AddIndexConcurrently
from django.db import connection, models
from django.db.migrations import Migration, operations
from django.db.migrations.executor import MigrationExecutor

from songsgen.db.migrate.safety.check import (
    FIXES,
    LINTER_FIX,
    check_plan,
    finding,
    finding_dict,
    finding_line,
    linter_findings,
)
from songsgen.db.migrate.safety.squawk import migration_sql
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
    # db_default=None is DEFAULT NULL: the existing rows and old code's inserts still have no value.
    ("NOT_NULL", lambda: [operations.AddField("song", "mood", models.CharField(max_length=9, db_default=None))], False),
    ("NOT_NULL", lambda: [operations.AddField("song", "mood", models.CharField(
        max_length=9, db_default=models.Value(None)))], False),
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

SAFE_ON_A_BIG_TABLE = [
    # A rename that keeps the table's and the column's names runs no SQL at all.
    lambda: [operations.AlterModelTable("song", "songs_song"), operations.RenameModel("song", "track")],
    lambda: [operations.AlterField("song", "lyrics", models.TextField(blank=True, default="", db_column="lyrics")),
             operations.RenameField("song", "lyrics", "words")],
    # Routine foreign-key changes, judged against the state's models (the related model resolves).
    lambda: [operations.AlterField("song", "user", models.ForeignKey(
        "accounts.user", on_delete=models.PROTECT, db_constraint=False, related_name="songs", db_index=False))],
    # Removing a unique_together adds nothing unique.
    lambda: [operations.AlterUniqueTogether("song", set())],
]


@pytest.mark.parametrize("ops", SAFE_ON_A_BIG_TABLE)
@pytest.mark.django_db
def test_passes_operations_that_are_safe_on_a_big_table(ops, settings):
    assert _codes(*ops(), big=True, settings=settings) == []


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
    # Altering a foreign key's column drops and re-adds its constraint: validated under lock on a big table.
    nullable_user = models.ForeignKey("accounts.user", null=True, on_delete=models.CASCADE, related_name="songs",
                                      db_index=False)
    assert _codes(operations.AlterField("song", "user", nullable_user), settings=settings) == [
        "CONSTRAINT_NOT_VALID"]
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
        # The linter as the migrate merges it: ours overrules it where a rule knows better (a unique constraint
        # on a table too small to matter; on a big one our schema editors apply it safely).
        found = check_plan(connection, [(migration, False)], state, use_linter=not migration.initial,
                           use_squawk=False)
        blocking += [f for f in found if f.blocking]
    assert blocking == []


def test_a_finding_prints_and_serialises_in_migrates_shape():
    """A finding is a Problem about a migration; migrate prints it, and --json lists it, under its own words."""
    found = replace(finding("DROP_COLUMN", "songs.0009_x", "drops column song.mood", "songsgen"),
                    agreed=("squawk:ban-drop-column",))
    assert found.subject == "songs.0009_x" and found.fix == FIXES["DROP_COLUMN"]
    assert finding_line(found) == (
        "UNSAFE DROP_COLUMN in songs.0009_x: drops column song.mood (also squawk:ban-drop-column)\n"
        f"    fix: {FIXES['DROP_COLUMN']}")
    assert finding_dict(found) == found.as_dict() | {  # report_format 2: the Problem, and the keys it had before
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


def _plan(*migrations: list) -> list[tuple[Migration, bool]]:
    """Pending migrations of the songs app, one per list of operations, in order."""
    plan = []
    for number, ops in enumerate(migrations, start=901):
        migration = Migration(f"0{number}_probe", "songs")
        migration.operations = list(ops)
        plan.append((migration, False))
    return plan


def _judge(plan: list[tuple[Migration, bool]]) -> dict[tuple[str, str], object]:
    """Every judge on the plan (the linter; squawk on PostgreSQL), from the applied state: findings by code and
    migration."""
    state = MigrationExecutor(connection)._create_project_state(with_applied_migrations=True)
    return {(f.code, f.subject): f for f in check_plan(connection, plan, state)}


class _Unbuildable(operations.base.Operation):
    """Its SQL cannot be built against this database (as a schema editor introspecting for a missing index)."""

    reduces_to_sql = True
    reversible = True

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        raise ValueError("Found wrong number (0) of constraints for songs_song(title)")

    def describe(self):
        return "Unbuildable probe"


class _Undescribable(_Unbuildable):
    def describe(self):
        raise RuntimeError("describe() is broken")


class _NoState(_Unbuildable):
    def state_forwards(self, app_label, state):
        raise RuntimeError("no state for this")


@pytest.mark.django_db(transaction=True)  # SQL is collected outside a transaction, as sqlmigrate does
def test_a_plan_that_adds_then_removes_a_unique_together_is_judged_without_crashing():
    """The linter's app_unique_together: the second migration's SQL would look in the live database for the
    constraint the first has not created yet (ValueError before). Ours judges it; a note says the SQL judges
    did not see it."""
    make_song()
    found = _judge(_plan([operations.AlterUniqueTogether("song", {("title", "genre")})],
                         [operations.AlterUniqueTogether("song", set())]))
    note = found["SQL_NOT_COLLECTED", "songs.0902_probe"]
    assert not note.blocking
    assert "Alter unique_together for song" in note.detail and "Found wrong number (0)" in note.detail
    assert [f for f in found.values() if f.blocking] == []


@pytest.mark.django_db(transaction=True)
def test_sql_that_cannot_be_built_for_the_first_migration_of_a_plan_blocks():
    """Nothing earlier in the plan explains it: the live database is what the migration will meet."""
    found = _judge(_plan([_Unbuildable()]))
    assert found["SQL_NOT_COLLECTED", "songs.0901_probe"].blocking
    assert "'Unbuildable probe'" in found["SQL_NOT_COLLECTED", "songs.0901_probe"].detail


@pytest.mark.django_db(transaction=True)
def test_an_error_while_judging_a_migration_is_a_finding_naming_it():
    found = _judge(_plan([_Undescribable()], [operations.AddField("song", "mood", models.IntegerField())]))
    failed = found["CHECK_FAILED", "songs.0901_probe"]
    assert failed.blocking and "RuntimeError: describe() is broken" in failed.detail
    assert found["NOT_NULL", "songs.0902_probe"].blocking  # the next migration is judged as usual

    found = _judge(_plan([_NoState()], [operations.AddField("song", "mood", models.IntegerField(null=True))]))
    assert "no state for this" in found["CHECK_FAILED", "songs.0901_probe"].detail
    later = found["CHECK_FAILED", "songs.0902_probe"]
    assert later.blocking and "cannot be built past songs.0901_probe" in later.detail


@pytest.mark.django_db(transaction=True)
def test_the_linters_add_unique_is_overruled_below_the_big_table_threshold(settings):
    make_song(title="a")
    make_song(title="b")
    found = _judge(_plan([operations.AlterUniqueTogether("song", {("title", "genre")})]))
    overruled = found["ADD_UNIQUE", "songs.0901_probe"]
    assert overruled.source == "django-migration-linter" and not overruled.blocking
    assert overruled.detail.startswith(
        "linter ADD_UNIQUE overruled: songs_song has 2 rows, below 100,000 (SONGSGEN_MIGRATE_BIG_TABLE_ROWS)")

    settings.MIGRATE_BIG_TABLE_ROWS = 2  # now it is big: ours says so, and the linter agrees
    found = _judge(_plan([operations.AlterUniqueTogether("song", {("title", "genre")})]))
    ours = found["ADD_UNIQUE", "songs.0901_probe"]
    assert ours.source == "songsgen"
    if connection.vendor == "postgresql":  # our schema editor builds it concurrently and attaches it
        assert not ours.blocking and ours.detail.startswith("applied safely (CREATE UNIQUE INDEX CONCURRENTLY")
        assert not [f for f in found.values() if f.blocking]  # the SQL judges read the safe form: nothing
    else:
        assert ours.blocking


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_varchar_widening_overrules_the_linter_on_a_big_table(settings):
    settings.MIGRATE_BIG_TABLE_ROWS = 1
    make_song()
    found = _judge(_plan([operations.AlterField("song", "title", models.CharField(max_length=300))]))
    assert [f for f in found.values() if f.blocking] == []
    linter = found["ALTER_COLUMN", "songs.0901_probe"]
    assert linter.detail.startswith("linter ALTER_COLUMN overruled: songs_song.title goes from varchar(200) to "
                                    "varchar(300), which rewrites nothing")
    # squawk's changing-column-type, overruled the same way, is a note and so merges into the linter's note.
    assert linter.agreed == ("squawk:changing-column-type",)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_type_change_is_overruled_on_a_small_table_only(settings):
    make_song()
    change = [operations.AlterField("song", "play_count", models.BigIntegerField(default=0))]
    found = _judge(_plan(change))
    assert [f for f in found.values() if f.blocking] == []
    assert "songs_song has 1 row, below 100,000" in found["ALTER_COLUMN", "songs.0901_probe"].detail

    settings.MIGRATE_BIG_TABLE_ROWS = 1
    found = _judge(_plan(change))
    assert found["COLUMN_TYPE_REWRITE", "songs.0901_probe"].blocking
    assert found["ALTER_COLUMN", "songs.0901_probe"].blocking


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_making_a_column_nullable_is_safe_for_every_judge(settings):
    """squawk's ban-drop-not-null is off (.squawk.toml): old code keeps working when a column accepts NULL."""
    settings.MIGRATE_BIG_TABLE_ROWS = 1
    make_song()
    found = _judge(_plan([operations.AlterField("song", "genre", models.CharField(max_length=50, null=True))]))
    assert found == {}
