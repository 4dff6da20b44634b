from django.db import migrations, models

class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Track",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("size", models.IntegerField(default=0)),
                ("note", models.TextField(null=True)),
                ("parent", models.ForeignKey(null=True, on_delete=models.CASCADE, to="online_fixture.track")),
            ],
            options={"indexes": [models.Index(fields=["name"], name="online_track_name")]},
        ),
        migrations.CreateModel(
            name="Play",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("track", models.ForeignKey(on_delete=models.CASCADE, to="online_fixture.track")),
            ],
        ),
    ]
