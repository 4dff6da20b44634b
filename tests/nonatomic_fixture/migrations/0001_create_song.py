from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Song",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=100)),
                ("plays", models.IntegerField(default=0)),
                ("rating", models.IntegerField(db_index=True, null=True)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(condition=models.Q(rating__gte=0, rating__lte=5),
                                           name="na_song_rating_range"),
                ],
            },
        ),
        migrations.CreateModel(
            name="Album",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100, unique=True)),
                ("song", models.ForeignKey(on_delete=models.CASCADE, to="nonatomic_fixture.song")),
            ],
        ),
    ]
