import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = []
    operations = [
        migrations.CreateModel(name="Owner", fields=[("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))]),
        migrations.CreateModel(
            name="Item",
            fields=[("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")), ("owner", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="alter_foreign_key_null.owner"))],
        ),
    ]
