"""`django.db.connection`'s alias instead of `schema_editor.connection.alias`."""

from django.db import connection, migrations
from django.db.models import F


def forward(apps, schema_editor):
    Song = apps.get_model("songs", "Song")
    Song.objects.using(connection.alias).filter(genre="rock").update(play_count=F("play_count") + 3)


class Migration(migrations.Migration):

    dependencies = [
        ("rehearse_fixture", "0002_default_manager"),
    ]

    operations = [
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
