from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("online_fixture", "0003_size_index")]

    operations = [
        migrations.AddField(model_name="track", name="loud", field=models.BooleanField(default=False)),
        migrations.RemoveField(model_name="track", name="note"),
    ]
