"""The batched backfill helper: keyset batches, restartable, and the project's analytics backfill."""

from __future__ import annotations

import pytest
from django.db import connection

from songs.models import Song
from songsgen.db.migrate.backfill import backfill
from tests.factories import make_song, make_user


@pytest.fixture
def songs():
    user = make_user()
    made = [make_song(user=user, title=f"b{i}") for i in range(23)]
    Song.objects.filter(pk__in=[s.pk for s in made[::3]]).update(play_count=5)
    return made


@pytest.mark.usefixtures("songs")
@pytest.mark.django_db(transaction=True)
def test_backfill_covers_every_row_once_in_batches():
    lines = []
    changed = backfill(
        connection, table="songs_song", set_sql="play_count = play_count + 1", batch_size=5,
        progress=lines.append,
    )
    assert changed == 23
    assert sorted(Song.objects.values_list("play_count", flat=True)) == sorted([6] * 8 + [1] * 15)
    assert lines and "23 rows" in lines[-1]


@pytest.mark.usefixtures("songs")
@pytest.mark.django_db(transaction=True)
def test_backfill_is_restartable():
    # A first run that dies after some batches: simulate by running over the first ids only.
    done = set(Song.objects.order_by("id").values_list("id", flat=True)[:10])
    Song.objects.filter(pk__in=done).update(analytics_data={"plays": 0, "likes": 0})
    vendor_empty = "'{}'::jsonb" if connection.vendor == "postgresql" else "'{}'"
    pending = f"analytics_data IS NULL OR analytics_data = {vendor_empty}"
    build = "jsonb_build_object" if connection.vendor == "postgresql" else "json_object"
    set_sql = f"analytics_data = {build}('plays', play_count, 'likes', 1)"
    changed = backfill(connection, table="songs_song", set_sql=set_sql, pending=pending, batch_size=4)
    assert changed == 13  # only the rows the first run had not reached
    assert backfill(connection, table="songs_song", set_sql=set_sql, pending=pending, batch_size=4) == 0


@pytest.mark.django_db(transaction=True)
def test_backfill_on_empty_table_does_nothing():
    assert backfill(connection, table="songs_song", set_sql="play_count = 1") == 0


@pytest.mark.usefixtures("songs")
@pytest.mark.django_db(transaction=True)
def test_analytics_migration_backfills_and_reverses():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("songs", "0002_add_song_analytics_data")])  # back before the backfill (and the index)
    Song.objects.update(analytics_data={})
    executor = MigrationExecutor(connection)
    executor.migrate([("songs", "0003_backfill_song_analytics_data")])
    for plays, data in Song.objects.values_list("play_count", "analytics_data"):
        assert data == {"plays": plays, "likes": 0}
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert set(Song.objects.search("b1").values_list("title", flat=True)) >= {"b1", "b10"}
