"""Raw SQL through `django.db.connection.cursor()`."""

from django.db import connection, migrations


def forward(apps, schema_editor):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE songs_song SET play_count = play_count + 5 WHERE genre = 'jazz'")


class Migration(migrations.Migration):

    dependencies = [
        ("rehearse_fixture", "0003_global_connection"),
    ]

    operations = [
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
