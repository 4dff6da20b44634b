"""Changes rows that existed before the plan, so a failure has real data to undo.

Atomic (the default): one UPDATE inside the migration's transaction, bounded to the first TOUCH_LIMIT songs by
id. On SQLite one transaction over a 1M-song table holds the write lock for 30–70 s (the search index's trigger
fires per title), longer than any writer's busy timeout: a migration of that size is written as the
non-atomic variant below (bench/README.md).
SONGSGEN_FIXTURE_ATOMIC=0: non-atomic, and the touch is a batched backfill of every song (songsgen/db/migrate/backfill.py):
each batch commits on its own, so writers wait one batch at most, and running it again continues where it
stopped. Its reverse is batched too. Both directions touch only the rows the other changed (the title suffix)."""

import os

from django.db import migrations, models

from songsgen.db.migrate.backfill import backfill

ATOMIC = os.environ.get("SONGSGEN_FIXTURE_ATOMIC", "1") != "0"
TOUCH_LIMIT = 10_000
TOUCH = "play_count = play_count + 7, title = title || ' (touched)'"
UNTOUCH = "play_count = play_count - 7, title = substr(title, 1, length(title) - 10)"  # 10: len(" (touched)")
TOUCHED = "title LIKE '%% (touched)'"  # %% : the backfill's statement goes through the cursor with parameters


def touch(apps, schema_editor):
    backfill(schema_editor.connection, table="songs_song", set_sql=TOUCH, pending=f"NOT ({TOUCHED})")


def untouch(apps, schema_editor):
    backfill(schema_editor.connection, table="songs_song", set_sql=UNTOUCH, pending=TOUCHED)


ADD_NOTE = migrations.AddField(model_name="widget", name="note", field=models.TextField(null=True))
INSERT_WIDGET = migrations.RunSQL("INSERT INTO migrations_fixture_widget (name, qty) VALUES ('w1', 1)",
                                  migrations.RunSQL.noop)


class Migration(migrations.Migration):

    atomic = ATOMIC

    dependencies = [
        ("migrations_fixture", "0001_create_widget"),
    ]

    operations = [
        ADD_NOTE,
        migrations.RunSQL(
            f"UPDATE songs_song SET {TOUCH} WHERE id IN (SELECT id FROM songs_song ORDER BY id LIMIT {TOUCH_LIMIT})",
            # The reverse touches only what the forward changed: rows written since are left alone.
            f"UPDATE songs_song SET {UNTOUCH} WHERE title LIKE '% (touched)'",
        ),
        INSERT_WIDGET,
    ] if ATOMIC else [
        # The backfill first: interrupted, it is recorded nowhere, and the next run continues it before the
        # two one-statement operations.
        migrations.RunPython(touch, untouch),
        ADD_NOTE,
        INSERT_WIDGET,
    ]
