from django.db import migrations, models


class Migration(migrations.Migration):
    """Atomic: committed before the non-atomic 0003 begins."""

    dependencies = [("nonatomic_fixture", "0001_create_song")]

    operations = [
        migrations.AddField(model_name="song", name="genre", field=models.CharField(max_length=50, null=True)),
    ]
