"""The SQLite online table rebuild, end to end: real `manage.py migrate` processes rebuild tests/online_fixture's
track table (30,000 rows, online from 1,000) while a writer process commits into it, and the result is
compared with what Django's own rebuild makes of the same database."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from songs.models import Song
from songsgen.db.migrate import observe
from songsgen.db.migrate.online.rebuild import Stats
from tests.db.online import (
    PLAY,
    STOCK,
    TRACK,
    VIEW,
    OnlineApp,
    TrackWriter,
    assert_writes_kept,
    columns,
    leftovers,
    raw,
    rows,
    schema,
    sequence,
)
from tests.factories import make_song, make_user

pytestmark = [pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's online table rebuild"),
              pytest.mark.django_db(transaction=True)]

ROWS = 30_000
MIGRATIONS = ["online_fixture.0002_longer_name_and_check", "online_fixture.0003_size_index",
              "online_fixture.0004_flag"]


@pytest.fixture
def app(subprocess_env, tmp_path):
    app = OnlineApp(subprocess_env, tmp_path)
    yield app
    app.clean()


@pytest.fixture
def writer(app, tmp_path):
    app.at_0001(ROWS)
    live = TrackWriter(app.path, tmp_path, parents=ROWS)
    yield live
    live.kill()


def assert_online(report: dict, migrations: list[str]) -> None:
    """Each migration named rebuilt the track table online, in more than one chunk, its locks measured."""
    entries = report["online"]
    assert sorted({e["migration"] for e in entries}) == sorted(migrations), entries
    for entry in entries:
        assert entry["table"] == TRACK and entry["inline"] is False
        assert entry["chunks"] > 1, entry
        assert entry["longest_lock_seconds"] > 0 and entry["cutover_seconds"] > 0, entry
        assert entry["longest_lock_seconds"] >= entry["cutover_seconds"]


def test_a_writer_keeps_committing_through_the_online_rebuilds(app, writer):
    before = rows(app.path, f"WHERE id <= {ROWS}")
    result, report = app.forward()
    written = writer.stop()
    assert result.returncode == 0, result.stderr
    assert report["status"] == "ok"
    assert_online(report, MIGRATIONS)
    assert sum(e["rows"] for e in report["online"] if e["migration"] == MIGRATIONS[0]) >= 2 * ROWS
    assert_writes_kept(app.path, written, ROWS)
    assert rows(app.path, f"WHERE id <= {ROWS}") == before  # the seeded rows, untouched
    assert columns(app.path) == ["id", "name", "size", "loud", "parent_id"]
    assert leftovers(app.path) == []


def test_the_schema_is_what_djangos_own_rebuild_makes(app, tmp_path):
    app.at_0001(ROWS)
    stock_db = tmp_path / "stock.db"
    with closing(raw(app.path)) as conn, closing(sqlite3.connect(stock_db)) as copy:
        conn.backup(copy)
    stock_env = dict(app.env, DATABASE_URL=f"sqlite:///{stock_db}", **STOCK)

    online, report = app.forward()
    assert online.returncode == 0, online.stderr
    assert_online(report, MIGRATIONS)
    stock = app.migrate("online_fixture", "--allow-unsafe", "--no-backup", env=stock_env)
    assert stock.returncode == 0, stock.stderr
    assert "Online:" not in stock.stdout

    assert schema(app.path) == schema(stock_db)
    assert rows(app.path) == rows(stock_db)
    with closing(raw(app.path)) as conn, closing(raw(stock_db)) as other:
        plays = f"SELECT id, track_id FROM {PLAY} ORDER BY id"
        assert conn.execute(plays).fetchall() == other.execute(plays).fetchall()


def test_children_a_view_and_the_id_counter_survive(app):
    app.at_0001(ROWS)
    with closing(raw(app.path)) as conn:
        conn.execute(f"CREATE VIEW {VIEW} AS SELECT id, name FROM {TRACK} WHERE size > 900")
        # Ids handed out and deleted since: the counter is above the largest id left.
        conn.executemany(f"INSERT INTO {TRACK} (id, name, size) VALUES (?, 'gone', 0)",
                         [(ROWS + i,) for i in range(1, 51)])
        conn.execute(f"DELETE FROM {TRACK} WHERE name = 'gone'")
        plays = conn.execute(f"SELECT id, track_id FROM {PLAY} ORDER BY id").fetchall()
        big = conn.execute(f"SELECT * FROM {VIEW} ORDER BY id").fetchall()
    counter = sequence(app.path)
    assert counter == ROWS + 50

    result, report = app.forward()
    assert result.returncode == 0, result.stderr
    assert_online(report, MIGRATIONS)
    with closing(raw(app.path)) as conn:
        assert conn.execute(f"SELECT id, track_id FROM {PLAY} ORDER BY id").fetchall() == plays  # none cascaded
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute(f"SELECT * FROM {VIEW} ORDER BY id").fetchall() == big
        assert sequence(app.path) >= counter
        new = conn.execute(f"INSERT INTO {TRACK} (name, size, loud) VALUES ('new', 1, 0)").lastrowid
        conn.execute(f"INSERT INTO {PLAY} (track_id) VALUES (?)", (new,))
    assert new is not None and new > counter  # no id of a deleted row handed out again


def test_a_backward_migration_rebuilds_online_too(app):
    app.at_0001(ROWS)
    before = rows(app.path)
    forward, _report = app.forward()
    assert forward.returncode == 0, forward.stderr

    result, report = app.forward(target="0001")
    assert result.returncode == 0, result.stderr
    assert report["online"], "the backward rebuilds ran Django's way"
    for entry in report["online"]:
        assert entry["table"] == TRACK and entry["chunks"] > 1, entry
    assert rows(app.path) == before
    assert columns(app.path) == ["id", "name", "size", "note", "parent_id"]
    assert leftovers(app.path) == []


def test_a_rehearsal_predicts_the_online_rebuild_and_leaves_the_live_table_alone(app):
    app.at_0001(ROWS)
    before = schema(app.path)
    result = app.migrate("online_fixture", "0002", "--rehearse-only", "--json")
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["rehearsal"]["steps"]
    step = next(s for s in steps if s["migration"] == MIGRATIONS[0])
    assert step["transaction"] is None  # applied operation by operation, as the live run will
    assert len(step["online"]) == 2 and all(line.startswith(f"{TRACK}: {ROWS:,} rows") for line in step["online"])
    assert 0 < step["lock_seconds"] < step["seconds"]  # chunks: the lock is held for a part of the time only
    assert schema(app.path) == before and leftovers(app.path) == []


def test_the_search_index_triggers_come_back_after_an_online_rebuild():
    user = make_user()
    for i in range(30):
        make_song(user=user, title=f"Ballad number {i}")
    heard: list[Stats] = []
    with override_settings(ONLINE_REBUILD_MIN_ROWS=0), observe.listening(heard.append):
        with connection.schema_editor(atomic=False) as editor:
            editor._remake_table(Song)
    assert [s.table for s in heard] == ["songs_song"] and heard[0].kept_triggers == 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'songs_song' "
                       "ORDER BY name")
        assert [r[0] for r in cursor.fetchall()] == [f"songs_song_search_{k}" for k in ("delete", "insert", "update")]
    assert leftovers(Path(connection.settings_dict["NAME"])) == []

    fresh = make_song(user=user, title="Quixotic serenade")
    assert list(Song.objects.search("Quixotic")) == [fresh]
    fresh.title = "Zephyr lullaby"
    fresh.save(update_fields=["title"])
    assert list(Song.objects.search("Zephyr")) == [fresh]
    assert not Song.objects.search("Quixotic").exists()
    assert Song.objects.search("Ballad number 12").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_checked_column_is_added_online_not_by_a_scan_under_the_lock():
    """SQLite tests an added column's CHECK (a JSONField's JSON_VALID) against every row there, holding the write
    lock for the whole scan (96 s at 5M songs): on a big table the column comes by an online rebuild instead."""
    from django.db import models
    from django.db.migrations.state import ModelState, ProjectState

    state = ProjectState()
    state.add_model(ModelState("checked_add", "Thing", [("id", models.AutoField(primary_key=True)),
                                                        ("size", models.IntegerField())]))
    model = state.apps.get_model("checked_add", "Thing")
    with connection.schema_editor() as editor:
        editor.create_model(model)
    heard: list[Stats] = []
    try:
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO checked_add_thing (id, size) VALUES (%s, %s)",
                               [(i, i) for i in range(1, 2001)])
        field = models.JSONField(null=True, db_default=models.Value({}, output_field=models.JSONField()))
        field.set_attributes_from_name("data")
        with override_settings(ONLINE_REBUILD_MIN_ROWS=1000), observe.listening(heard.append):
            with connection.schema_editor(atomic=False) as editor:
                editor.add_field(model, field)
        assert [s.table for s in heard] == ["checked_add_thing"] and heard[0].rows == 2000
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM checked_add_thing WHERE data = '{}'")
            assert cursor.fetchone()[0] == 2000
            cursor.execute("SELECT sql FROM sqlite_master WHERE name = 'checked_add_thing'")
            assert "JSON_VALID" in cursor.fetchone()[0]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS checked_add_thing")
