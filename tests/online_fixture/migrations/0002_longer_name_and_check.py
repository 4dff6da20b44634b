from django.db import migrations, models


class Migration(migrations.Migration):
    """One AlterField and one AddConstraint: two rebuilds of the track table."""

    dependencies = [("online_fixture", "0001_create_track")]

    operations = [
        migrations.AlterField(model_name="track", name="name", field=models.CharField(max_length=200)),
        migrations.AddConstraint(
            model_name="track",
            constraint=models.CheckConstraint(condition=models.Q(size__gte=0), name="online_track_size_positive"),
        ),
    ]
