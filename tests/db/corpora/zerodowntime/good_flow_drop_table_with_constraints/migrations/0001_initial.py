import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Parent",
            fields=[("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))],
            options={"db_table": "drop_tbl_parent"},
        ),
        migrations.CreateModel(
            name="Main",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("main_id", models.IntegerField(null=True, unique=True)),
                ("parent", models.OneToOneField(null=True, on_delete=django.db.models.deletion.CASCADE, to="good_flow_drop_table_with_constraints.parent")),
            ],
            options={"db_table": "drop_tbl_main"},
        ),
        migrations.CreateModel(
            name="Child",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("main", models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, to="good_flow_drop_table_with_constraints.main", to_field="main_id")),
            ],
            options={"db_table": "drop_tbl_child"},
        ),
    ]
