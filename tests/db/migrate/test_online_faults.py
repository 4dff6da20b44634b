"""An SQLite online rebuild that cannot finish: a row the new schema refuses, a copy that does not match, and
`manage.py migrate` SIGKILLed during the copy and between the cut-over and the old table's drop, a writer
process committing throughout. The table stays whole and writable, and the next migrate (or dbcheck)
removes what the dead rebuild left."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from songs.models import Song
from songsgen.db.migrate.online import names, pace
from songsgen.db.migrate.online.rebuild import RebuildStopped
from tests.conftest import REPO
from tests.db.dbstate import database_state
from tests.db.online import (
    OLD,
    SHADOW,
    TRACK,
    OnlineApp,
    TrackWriter,
    Written,
    assert_writes_kept,
    columns,
    leftovers,
    raw,
    rows,
    schema,
)
from tests.factories import make_song, make_user

pytestmark = [pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's online table rebuild"),
              pytest.mark.django_db(transaction=True)]

ROWS = 30_000
BIG = 100_000  # the copy and the old table's drop take long enough to be caught half-way
SHAPE = {"id", "name", "size", "note", "parent_id"}  # 0001 and 0002 (whose rebuild moves `name` to the end)


@pytest.fixture
def app(subprocess_env, tmp_path):
    app = OnlineApp(subprocess_env, tmp_path)
    yield app
    app.clean()


def assert_writable(path: Path) -> None:
    """The application can still insert, update and delete rows of the table (and the FKs are checked)."""
    with closing(raw(path)) as conn:
        extra, zero = (", loud", ", 0") if "loud" in columns(path) else ("", "")
        pk = conn.execute(f"INSERT INTO {TRACK} (name, size, parent_id{extra}) VALUES ('after', 1, 1{zero})").lastrowid
        conn.execute(f"UPDATE {TRACK} SET size = 2 WHERE id = ?", (pk,))
        assert conn.execute(f"SELECT name, size FROM {TRACK} WHERE id = ?", (pk,)).fetchone() == ("after", 2)
        conn.execute(f"DELETE FROM {TRACK} WHERE id = ?", (pk,))
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(f"INSERT INTO {TRACK} (name, size, parent_id{extra}) VALUES ('x', 1, -7{zero})")


def test_a_row_the_new_check_refuses_leaves_the_table_as_it_was(app):
    app.at_0001(ROWS)
    with closing(raw(app.path)) as conn:
        conn.execute(f"UPDATE {TRACK} SET size = -5 WHERE id = {ROWS // 2}")
    before, data = schema(app.path), rows(app.path)

    result, report = app.forward()
    assert result.returncode == 1, result.stderr
    assert report["status"] == "restored", report
    assert "CHECK constraint failed" in result.stderr
    assert schema(app.path) == before
    assert rows(app.path) == data
    assert leftovers(app.path) == []
    assert_writable(app.path)


def test_a_copy_that_does_not_match_stops_before_the_cut_over(monkeypatch):
    user = make_user()
    songs = [make_song(user=user, title=f"Song {i}") for i in range(40)]
    victim = songs[-1].pk  # copied by a later chunk: the shadow has a wrong row for it first
    shadow = names.shadow("songs_song")
    real_after_chunk = pace.Pacer.after_chunk
    tampered: list[int] = []

    def tamper(self: pace.Pacer, held: float) -> float:
        if tampered:
            return real_after_chunk(self, held)
        tampered.append(victim)
        with self.connection.cursor() as cursor:
            cursor.execute(f'PRAGMA table_info("{shadow}")')
            cols = ", ".join(f'"{row[1]}"' for row in cursor.fetchall())
            cursor.execute(f'INSERT INTO "{shadow}" ({cols}) SELECT {cols} FROM songs_song WHERE id = %s', [victim])
            cursor.execute(f"UPDATE \"{shadow}\" SET title = 'tampered' WHERE id = %s", [victim])
        return real_after_chunk(self, held)

    monkeypatch.setattr(pace, "FIRST_CHUNK", 5)  # several chunks of 40 songs
    monkeypatch.setattr(pace.Pacer, "after_chunk", tamper)
    before = database_state(connection)
    with override_settings(ONLINE_REBUILD_MIN_ROWS=0), pytest.raises(RebuildStopped, match=f"row {victim} differs"):
        with connection.schema_editor(atomic=False) as editor:
            editor._remake_table(Song)
    connection.close()
    assert database_state(connection) == before
    assert leftovers(Path(connection.settings_dict["NAME"])) == []
    song = make_song(user=user, title="Written after")
    assert Song.objects.search("Written after").get() == song


def kill_when(app: OnlineApp, proc: subprocess.Popen[str], ready: str) -> bool:
    """SIGKILL the migrate once the query `ready` answers true (as power loss would); False if it ended first."""
    with closing(raw(app.path)) as conn:
        while proc.poll() is None:
            try:
                hit = conn.execute(ready).fetchone()[0]
            except sqlite3.OperationalError:  # its table is not there (yet, or any more)
                hit = False
            if hit:
                proc.kill()
                proc.wait(timeout=30)
                return True
            time.sleep(0.002)
    return False


DURING_COPY = (f'SELECT (SELECT count(*) FROM "{SHADOW}") > 2000 '
               f"AND NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '{OLD}')")
AFTER_CUT_OVER = f"SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '{OLD}')"


def killed(app: OnlineApp, ready: str, left: tuple[str, str]) -> bool:
    """Start `migrate online_fixture 0002` and SIGKILL it at `ready`; True if it died leaving `left` behind."""
    proc = app.popen("online_fixture", "0002", "--allow-unsafe", "--no-backup")
    try:
        return kill_when(app, proc, ready) and left in leftovers(app.path)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


WINDOWS = [pytest.param(DURING_COPY, ("table", SHADOW), id="during-the-copy"),
           pytest.param(AFTER_CUT_OVER, ("table", OLD), id="between-cut-over-and-drop")]
SEEDED = {i: (f"track {i}", i % 997) for i in range(1, BIG + 1)}


@pytest.fixture
def writers():
    started: list[TrackWriter] = []
    yield started
    for writer in started:
        writer.kill()


def killed_under_writes(app: OnlineApp, folder: Path, writers: list[TrackWriter], ready: str,
                        left: tuple[str, str]) -> TrackWriter:
    """A writer committing throughout, and `migrate online_fixture 0002` SIGKILLed at `ready` (tried twice);
    the table keeps every row and the writer goes on committing."""
    app.at_0001(BIG)
    writer = TrackWriter(app.path, folder, parents=BIG)
    writers.append(writer)
    if not (killed(app, ready, left) or killed(app, ready, left)):  # a missed window is tried once more
        pytest.skip("the migrate got past that step before it could be killed there, twice")
    writer.wait_for_commits(len(writer.lines()) + 20)  # it goes on writing after the kill
    assert set(columns(app.path)) == SHAPE
    assert rows(app.path, f"WHERE id <= {BIG}") == SEEDED
    return writer


def assert_finished(app: OnlineApp, output: str, written: Written) -> None:
    """The leftovers were removed (and said so), 0002 is applied, nothing the seed or the writer wrote is lost."""
    assert "Removed the " in output and names.PREFIX in output
    assert leftovers(app.path) == []
    assert_writes_kept(app.path, written, BIG)
    assert rows(app.path, f"WHERE id <= {BIG}") == SEEDED
    with closing(raw(app.path)) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert "varchar(200)" in conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (TRACK,)).fetchone()[0]
    assert_writable(app.path)


@pytest.mark.parametrize(("ready", "left"), WINDOWS)
def test_the_next_migrate_after_a_kill_removes_the_leftovers_and_finishes(app, tmp_path, writers, ready, left):
    writer = killed_under_writes(app, tmp_path, writers, ready, left)
    again = app.migrate("online_fixture", "0002", "--allow-unsafe", "--no-backup")
    written = writer.stop()
    assert again.returncode == 0, again.stderr
    assert_finished(app, again.stderr, written)


@pytest.mark.parametrize(("ready", "left"), WINDOWS)
def test_resume_restore_after_a_kill_then_migrate_loses_nothing(app, tmp_path, writers, ready, left):
    writer = killed_under_writes(app, tmp_path, writers, ready, left)
    resumed = app.migrate("--resume-restore")
    assert resumed.returncode == 0, resumed.stderr
    again = app.migrate("online_fixture", "0002", "--allow-unsafe", "--no-backup")
    written = writer.stop()
    assert again.returncode == 0, again.stderr
    assert_finished(app, resumed.stdout + resumed.stderr + again.stderr, written)


def test_dbcheck_removes_a_killed_rebuilds_leftovers_when_no_migrate_runs(app, tmp_path, writers):
    writer = killed_under_writes(app, tmp_path, writers, DURING_COPY, ("table", SHADOW))
    check = subprocess.run([sys.executable, str(REPO / "manage.py"), "dbcheck"], env=app.env, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert "removed the unfinished online rebuild of online_fixture_track" in check.stdout + check.stderr
    assert "interrupted" in check.stdout + check.stderr  # the dead migrate itself is named too
    assert leftovers(app.path) == []
    written = writer.stop()
    assert_writes_kept(app.path, written, BIG)
    assert rows(app.path, f"WHERE id <= {BIG}") == SEEDED
    assert_writable(app.path)
