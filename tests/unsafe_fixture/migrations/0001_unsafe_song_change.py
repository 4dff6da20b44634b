# Deliberately unsafe on a big songs_song, for the safety checks' tests (tests/db/migrate/safety/test_squawk.py); only
# ever judged by `migrate --check-safety`, never applied.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("songs", "0005_add_song_genre_index"),
    ]

    operations = [
        # This app's state learns the existing songs_song table; the database is not touched.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Song",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True)),
                        ("title", models.CharField(max_length=200)),
                    ],
                    options={"db_table": "songs_song"},
                ),
            ],
        ),
        # Blocks writes while the index is built: ours (INDEX_NOT_CONCURRENT) and squawk both say so.
        migrations.AddIndex("song", models.Index(fields=["title"], name="unsafe_song_title")),
        # NOT NULL without db_default: the migration fails on existing rows and old code's inserts fail.
        migrations.AddField("song", "rating", models.IntegerField()),
        # Raw SQL our operation checks cannot read: only squawk sees the CHECK validated under lock.
        migrations.RunSQL(
            'ALTER TABLE "songs_song" ADD CONSTRAINT "unsafe_song_title_set" CHECK ("title" <> \'\');',
            reverse_sql='ALTER TABLE "songs_song" DROP CONSTRAINT "unsafe_song_title_set";',
        ),
    ]
