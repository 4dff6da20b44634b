from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [("safeddl_fixture", "0002_as_makemigrations_writes_it")]

    operations = [
        migrations.RemoveIndex(model_name="item", name="safeddl_item_name"),
    ]
