import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("alter_foreign_key_null", "0001_initial")]
    operations = [
        migrations.AlterField(
            model_name="item",
            name="owner",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, to="alter_foreign_key_null.owner"),
        ),
    ]
