"""Non-atomic, after the drop: the group holding 0004 commits before it runs. SONGSGEN_NA_DROP_GENRE=1 first drops
the genre column, committed at once as every operation of a non-atomic migration is."""

import os

from django.db import migrations

from ._steps import step


class Migration(migrations.Migration):

    atomic = False

    dependencies = [("nonatomic_fixture", "0004_drop")]

    operations = [
        *([migrations.RemoveField(model_name="song", name="genre")] if os.environ.get("SONGSGEN_NA_DROP_GENRE") == "1"
          else []),
        migrations.RunPython(step("0005"), migrations.RunPython.noop),
    ]
