"""transferdb's fast paths, on real files and a real PostgreSQL server: checksums the databases compute
themselves (songsgen.db.move.rowhash) and a bulk load without secondary indexes and foreign keys
(songsgen.db.move.transfer_defer). The proof must still see one changed value, and the target's schema must
come out as migrate made it, even after a kill.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.db.move import test_transfer
from tests.db.move.test_transfer import REPO, dbcompare, env_for, manage, new_sqlite, ok, refused, sql, transferdb

# The same fixtures as test_transfer (a server, a migrated template, a seeded source), for this module.
pg_server, template, new_pg, source = (test_transfer.pg_server, test_transfer.template, test_transfer.new_pg,
                                       test_transfer.source)

DEFERRED = "songsgen_transfer_deferred"

# One row per column of Hashed, all columns set; the test then changes one value of one row each.
HASHED_ROWS = r'''
import datetime as dt
from tests.db.transfer_fixtures.models import Hashed
from django.contrib.auth import get_user_model
owner = get_user_model().objects.create_user(username="owner")
for i in range(12):
    Hashed.objects.create(
        flag=True, maybe=True, payload={"a": [1, 2.5], "b": {"c": "ü"}}, ratio=0.1 + 0.2,
        happened_at=dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC), day=dt.date(2024, 5, 6),
        at=dt.time(7, 8, 9, 123456), span=dt.timedelta(seconds=90), blob=b"\x01\x02", label=f"row{i}", count=10 ** 12,
        owner=owner,
    )
print("hashed rows written")
'''

# The smallest change of each column, one row each (rows are told apart by label).
CHANGES = {
    "row0": "flag = NOT flag",
    "row1": "maybe = NULL",
    "row2": "payload = jsonb_set(payload, '{a,0}', '2')",
    "row3": "ratio = ratio + 1e-16",  # two units in the last place: beyond 15 significant digits
    "row4": "happened_at = happened_at + interval '1 microsecond'",
    "row5": "day = day + 1",
    "row6": "at = at + interval '1 microsecond'",
    "row7": "span = span + interval '1 microsecond'",
    "row8": r"blob = blob || '\x00'::bytea",
    "row9": "label = label || ' '",
    "row10": "count = count + 1",
    "row11": "owner_id = NULL",
}


def _schema(url: str) -> tuple[list[tuple], list[tuple]]:
    """Every index and constraint definition of the public schema (an index's without parentheses and casts:
    PostgreSQL prints a recreated partial index's predicate with its casts moved around)."""
    indexes = sql(url, "SELECT tablename, indexname, regexp_replace(indexdef, '[()]|::[a-z ]+(\\[\\])?', '', 'g') "
                       "FROM pg_indexes WHERE schemaname = 'public' AND tablename NOT LIKE 'songsgen_transfer%%' "
                       "ORDER BY 1, 2")
    constraints = sql(url, "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                           "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2")
    return indexes, constraints


def test_one_changed_value_of_any_column_type_is_named(new_pg, tmp_path):
    src = new_sqlite(tmp_path, "hashed.db")
    assert "hashed rows written" in ok(manage("shell", "-c", HASHED_ROWS, url=src, data_dir=tmp_path)).stdout
    pg = new_pg()
    ok(transferdb(source=src, target=pg, data_dir=tmp_path))
    for label, change in CHANGES.items():
        sql(pg, f"UPDATE transfer_fixtures_hashed SET {change} WHERE label = %s", (label,))
    ids = dict(sql(pg, "SELECT label, replace(id::text, '-', '') FROM transfer_fixtures_hashed"))

    result = dbcompare(source=src, target=pg, data_dir=tmp_path)
    assert result.returncode == 1
    line = next(li for li in result.stdout.splitlines() if li.startswith("transfer_fixtures_hashed"))
    named = line.split("changed: pk ", 1)[1].split(";")[0].split(", ")
    # row9's label changed, so its id is looked up by the new label.
    expected = {ids[label + (" " if label == "row9" else "")] for label in CHANGES}
    assert {pk.replace("-", "") for pk in named} == expected
    assert "same row count" in line
    refused(result, "transfer_fixtures_hashed")


def test_the_target_gets_back_every_index_and_foreign_key(source, new_pg, tmp_path):
    pg, fresh = new_pg(), new_pg()
    out = ok(transferdb(source=source, target=pg, data_dir=tmp_path))
    assert "source and target are equal" in out.stdout
    assert _schema(pg) == _schema(fresh)
    assert not sql(pg, "SELECT 1 FROM pg_tables WHERE tablename = %s", (DEFERRED,))
    # The foreign keys are real again: a song of a user that does not exist is refused.
    with pytest.raises(Exception, match="foreign key"):
        sql(pg, "INSERT INTO songs_song (id, user_id, title, genre, style_prompt, lyrics, status, audio_file_path, "
                "video_file_path, play_count, created_at) VALUES (99999, 424242, 't', 'pop', '', '', 'pending', '', "
                "'', 0, now())")


def test_a_transfer_killed_while_indexes_are_deferred_resumes_and_restores_them(source, new_pg, tmp_path):
    pg, fresh = new_pg(), new_pg()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "transferdb", "--from", source, "--to", pg, "--batch-size", "2"],
        env=env_for(source, tmp_path), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Killed as soon as the songs table is partly copied without its indexes. Watched through the catalog
        # and the progress table only: a query on songs_song itself would hold a lock the deferral avoids.
        with psycopg.connect(pg, autocommit=True) as watch:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                indexes, progress = watch.execute(
                    "SELECT (SELECT count(*) FROM pg_indexes WHERE tablename = 'songs_song'), "
                    "to_regclass('songsgen_transfer_progress') IS NOT NULL").fetchone()
                copied = watch.execute(
                    "SELECT coalesce(max(copied), 0) FROM songsgen_transfer_progress WHERE table_name = 'songs_song'"
                ).fetchone()[0] if progress else 0
                if 0 < copied < 400 and indexes == 1:  # only the primary key left
                    process.send_signal(signal.SIGKILL)
                    break
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, "transferdb ended before it was killed mid-table"
    assert sql(pg, f"SELECT count(*) FROM {DEFERRED} WHERE table_name = 'songs_song'")[0][0] > 1
    assert _schema(pg) != _schema(fresh)

    refused(transferdb(source=source, target=pg, data_dir=tmp_path), "interrupted transfer", "--resume")
    out = ok(transferdb("--resume", source=source, target=pg, data_dir=tmp_path))
    assert "Resumed and copied" in out.stdout
    assert _schema(pg) == _schema(fresh)
    assert not sql(pg, "SELECT 1 FROM pg_tables WHERE tablename = %s", (DEFERRED,))
    ok(dbcompare(source=source, target=pg, data_dir=tmp_path))


def test_a_target_killed_mid_transfer_can_start_over_with_truncate(source, new_pg, tmp_path):
    """--truncate after a kill still brings back what the killed run deferred."""
    pg, fresh = new_pg(), new_pg()
    ok(transferdb(source=source, target=pg, data_dir=tmp_path))
    # What a kill leaves behind: the indexes of songs dropped and saved, the table half done.
    ok(manage("shell", "-c", (
        "from songsgen.db.move.external import open_database\n"
        "from songsgen.db.move.tables import dependency_order\n"
        "from songsgen.db.move.transfer_defer import defer\n"
        f"with open_database({pg!r}, role='target') as t:\n"
        "    print(defer(t, next(x for x in dependency_order() if x.name == 'songs_song')))\n"
    ), url=source, data_dir=Path(tmp_path)))
    assert _schema(pg) != _schema(fresh)
    ok(transferdb("--truncate", source=source, target=pg, data_dir=tmp_path))
    assert _schema(pg) == _schema(fresh)
    ok(dbcompare(source=source, target=pg, data_dir=tmp_path))


def test_a_source_song_of_a_missing_user_is_named_and_truncate_starts_over(new_pg, tmp_path):
    """SQLite leaves foreign keys unchecked on files written without them; the target's key, re-added after the
    bulk load, finds the orphan: a one-line refusal that says --truncate (a --resume would meet it again)."""
    src = new_sqlite(tmp_path, "orphan.db")
    orphan = ('from accounts.models import User; from songs.models import Song; from django.db import connection\n'
              'u = User.objects.create_user(username="a")\n'
              'ids = [Song.objects.create(user=u, title=f"s{i}", genre="pop").id for i in range(3)]\n'
              'c = connection.cursor(); c.execute("PRAGMA foreign_keys = OFF")\n'
              'c.execute("UPDATE songs_song SET user_id = 4242 WHERE id = %s", [ids[1]]); print("orphan written")')
    assert "orphan written" in ok(manage("shell", "-c", orphan, url=src, data_dir=tmp_path)).stdout
    pg = new_pg()
    err = refused(transferdb(source=src, target=pg, data_dir=tmp_path), "songs_song holds rows whose foreign key",
                  "rerun with --truncate")
    assert [line for line in err.splitlines() if "Error" in line] == [err.strip().splitlines()[-1]]
    fix = 'from songs.models import Song; Song.objects.filter(user_id=4242).delete(); print("fixed")'
    assert "fixed" in ok(manage("shell", "-c", fix, url=src, data_dir=tmp_path)).stdout
    again = ok(transferdb("--truncate", source=src, target=pg, data_dir=tmp_path))
    assert "source and target are equal" in again.stdout
