"""Non-atomic: a column, then a step that fails or hangs on demand (_steps.py). SONGSGEN_NA_IRREVERSIBLE=1 puts an
irreversible data change first: every song's plays + 7."""

import os

from django.db import migrations, models

from ._steps import step


def add_seven(apps, schema_editor):
    schema_editor.execute("UPDATE nonatomic_fixture_song SET plays = plays + 7")


class Migration(migrations.Migration):

    atomic = False

    dependencies = [("nonatomic_fixture", "0002_add_genre")]

    operations = [
        *([migrations.RunPython(add_seven)] if os.environ.get("SONGSGEN_NA_IRREVERSIBLE") == "1" else []),
        migrations.AddField(model_name="song", name="half_done", field=models.IntegerField(null=True)),
        migrations.RunPython(step("0003"), migrations.RunPython.noop),
    ]
