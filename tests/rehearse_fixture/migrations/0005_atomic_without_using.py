"""`transaction.atomic()` without `using`, around a write through the default manager."""

from django.db import migrations, transaction
from django.db.models import F


def forward(apps, schema_editor):
    Song = apps.get_model("songs", "Song")
    with transaction.atomic():
        Song.objects.filter(genre="folk").update(play_count=F("play_count") + 11)


class Migration(migrations.Migration):

    dependencies = [
        ("rehearse_fixture", "0004_raw_cursor"),
    ]

    operations = [
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
