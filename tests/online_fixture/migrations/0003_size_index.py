from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("online_fixture", "0002_longer_name_and_check")]

    operations = [
        migrations.AddIndex(model_name="track", index=models.Index(fields=["size", "id"], name="online_track_size")),
    ]
