from django.db import migrations, models


class Migration(migrations.Migration):
    """Changes rows that existed before the plan, so a restore has real data to put back."""

    dependencies = [
        ("migrations_fixture", "0001_create_widget"),
    ]

    operations = [
        migrations.AddField(model_name="widget", name="note", field=models.TextField(null=True)),
        migrations.RunSQL(
            "UPDATE songs_song SET play_count = play_count + 7, title = title || ' (touched)'",
            # The reverse touches only what the forward changed: rows written since are left alone.
            "UPDATE songs_song SET play_count = play_count - 7, title = substr(title, 1, length(title) - 10) "
            "WHERE title LIKE '% (touched)'",
        ),
        migrations.RunSQL("INSERT INTO migrations_fixture_widget (name, qty) VALUES ('w1', 1)", migrations.RunSQL.noop),
    ]
