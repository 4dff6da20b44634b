"""A new table, with one row: 0006 reads it in the same plan."""

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("songs", "0005_add_song_genre_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="Ledger",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("step", models.CharField(max_length=50)),
                ("amount", models.IntegerField(default=0)),
            ],
        ),
        migrations.RunSQL("INSERT INTO rehearse_fixture_ledger (step, amount) VALUES ('created', 1)",
                          migrations.RunSQL.noop),
    ]
