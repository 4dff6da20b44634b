"""Every migration of the project runs backward and forward again on a database holding rows."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import User
from queueing.models import GenerationQueue
from songs.models import Song
from tests.factories import make_song, make_user

OUR_APPS = ("accounts", "songs", "queueing")


def _schema() -> dict[str, list[str]]:
    """Tables and their columns as the database reports them."""
    with connection.cursor() as cursor:
        tables = sorted(connection.introspection.table_names(cursor))
        return {
            t: sorted(c.name for c in connection.introspection.get_table_description(cursor, t)) for t in tables
        }


def _our_migrations(executor: MigrationExecutor) -> list[tuple[str, str]]:
    graph = executor.loader.graph
    plan = []
    for leaf in graph.leaf_nodes():
        for node in graph.forwards_plan(leaf):
            if node[0] in OUR_APPS and node not in plan:
                plan.append(node)
    return plan


def _populate() -> None:
    user = make_user()
    for i in range(5):
        song = make_song(user=user, title=f"migr {i}")
        if i % 2:
            song.mark_generating()


@pytest.mark.django_db(transaction=True)
def test_every_migration_reverses_and_reapplies_with_rows():
    _populate()
    before = _schema()
    executor = MigrationExecutor(connection)
    ours = _our_migrations(executor)
    assert ours, "no project migrations found"

    # Back, one migration at a time, each time with rows in the tables that still exist.
    for app, name in reversed(ours):
        executor.loader.build_graph()
        parents = [p for p in executor.loader.graph.node_map[(app, name)].parents if p.key[0] == app]
        target = (app, parents[0].key[1]) if parents else (app, None)
        executor.migrate([target])
        executor = MigrationExecutor(connection)
    assert not {t for t in _schema() if t.split("_")[0] in OUR_APPS}

    # Forward again to the latest state: the same schema as before.
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert _schema() == before
    _populate()
    assert Song.objects.count() == 5 and GenerationQueue.objects.count() == 5 and User.objects.count() == 1


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_migration_names_are_descriptive():
    executor = MigrationExecutor(connection)
    for app, name in _our_migrations(executor):
        assert "auto_" not in name, f"{app}.{name}: name migrations with --name"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite full-text index")
@pytest.mark.django_db(transaction=True)
def test_search_index_migration_continues_after_an_interrupted_run():
    user = make_user()
    for i in range(3):
        make_song(user=user, title=f"interrupted {i}")
    call_command("migrate", "songs", "0003", verbosity=0)
    # What a run killed after its first statements leaves: the index table, unrecorded and unfilled.
    with connection.cursor() as cursor:
        cursor.execute("CREATE VIRTUAL TABLE songs_song_search USING fts5(title, suno_song_id, tokenize = 'trigram')")
    try:
        call_command("migrate", "songs", "0004", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM songs_song_search WHERE songs_song_search MATCH 'interrupted'")
            assert cursor.fetchone()[0] == 3
    finally:
        call_command("migrate", verbosity=0)
