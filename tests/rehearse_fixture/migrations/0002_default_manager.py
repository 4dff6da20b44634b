"""The usual data migration: the historical model's default manager, which routes to the `default` alias."""

from django.db import migrations
from django.db.models import F


def forward(apps, schema_editor):
    Song = apps.get_model("songs", "Song")
    Song.objects.filter(genre="pop").update(play_count=F("play_count") + 7)


class Migration(migrations.Migration):

    dependencies = [
        ("rehearse_fixture", "0001_create_ledger"),
    ]

    operations = [
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
