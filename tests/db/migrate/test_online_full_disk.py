"""A disk that fills during an online rebuild (SQLite, a real tmpfs): the rebuild stops, the table and every row
stay as they were, no capture trigger is left to fail the application's writes."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection, connections, models, transaction
from django.db.migrations.state import ModelState, ProjectState
from django.test import override_settings

from songsgen.db.migrate.online import leftovers
from songsgen.db.migrate.sqlite3.base import DatabaseWrapper
from tests.db.migrate.test_rehearse_runs import mounted

pytestmark = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's online table rebuild")
ROWS = 3_000
PAD = "x" * 400  # ~1.3 MB of rows and 1.8 MB of other files on a 4 MB tmpfs: no room for the copy


@pytest.mark.django_db(transaction=True)
def test_a_full_disk_stops_the_rebuild_and_leaves_the_table_as_it_was(tmp_path):
    folder = tmp_path / "small"
    with mounted(folder, ["-t", "tmpfs", "-o", "size=4096k,mode=0700", "tmpfs"]):
        db = DatabaseWrapper({**connection.settings_dict, "NAME": str(folder / "full.db")}, alias="full_disk")
        connections["full_disk"] = db  # transaction.atomic(using=…) finds it by its alias
        try:
            state = ProjectState()
            state.add_model(ModelState("full_disk", "Thing", [("id", models.AutoField(primary_key=True)),
                                                              ("note", models.TextField())]))
            model = state.apps.get_model("full_disk", "Thing")
            with db.schema_editor() as editor:
                editor.create_model(model)
            with db.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode = WAL")
                for start in range(1, ROWS + 1, 500):  # the WAL emptied after each batch: the file alone fills it
                    with transaction.atomic(using="full_disk"):
                        cursor.executemany("INSERT INTO full_disk_thing (id, note) VALUES (%s, %s)",
                                           [(i, f"{i} {PAD}") for i in range(start, min(start + 500, ROWS + 1))])
                    cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = folder / "filler"  # what the operator frees once the disk is full
            filler.write_bytes(b"\0" * 1_800_000)
            with override_settings(ONLINE_REBUILD_MIN_ROWS=0), pytest.raises(OperationalError, match="full"):
                with db.schema_editor(atomic=False) as editor:
                    editor._remake_table(model)
            with db.cursor() as cursor:
                cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                assert cursor.fetchall() == []  # the application's writes do not go through a trigger
                cursor.execute("SELECT count(*), min(note), max(id) FROM full_disk_thing")
                assert cursor.fetchone() == (ROWS, f"1 {PAD}", ROWS)
            filler.unlink()
            # The shadow, if even its drop found no room, goes with the next migrate (or dbcheck).
            assert {item.kind for item in leftovers.remove(db)} <= {"capture"}
            with db.cursor() as cursor:
                cursor.execute("SELECT name FROM sqlite_master WHERE name LIKE '%songsgen%'")
                assert cursor.fetchall() == []
                cursor.execute("INSERT INTO full_disk_thing (note) VALUES ('after')")
                cursor.execute("SELECT id FROM full_disk_thing WHERE note = 'after'")
                assert cursor.fetchone()[0] == ROWS + 1
        finally:
            db.close()
            del connections["full_disk"]
