"""Atomic and destructive: drops a column with an index and a check, and a table with a unique and a foreign key.
SONGSGEN_NA_SABOTAGE=1 also adds a column behind the migration state's back, which verification catches."""

import os

from django.db import migrations

SABOTAGE = migrations.RunSQL("ALTER TABLE nonatomic_fixture_song ADD COLUMN stray integer", migrations.RunSQL.noop)


class Migration(migrations.Migration):

    dependencies = [("nonatomic_fixture", "0003_half_done")]

    operations = [
        migrations.RemoveConstraint(model_name="song", name="na_song_rating_range"),
        migrations.RemoveField(model_name="song", name="rating"),
        migrations.DeleteModel(name="Album"),
        *([SABOTAGE] if os.environ.get("SONGSGEN_NA_SABOTAGE") == "1" else []),
    ]
