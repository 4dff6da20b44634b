import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Parent",
            fields=[("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))],
            options={"db_table": "drop_col_parent"},
        ),
        migrations.CreateModel(
            name="Main",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("main_id", models.IntegerField(null=True, unique=True)),
                ("field_u1", models.IntegerField(null=True)),
                ("field_i1", models.IntegerField(null=True)),
                ("parent", models.OneToOneField(null=True, on_delete=django.db.models.deletion.CASCADE, to="good_flow_drop_column_with_constraints.parent")),
            ],
            options={"db_table": "drop_col_main"},
        ),
        migrations.CreateModel(
            name="Child",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("main", models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, to="good_flow_drop_column_with_constraints.main", to_field="main_id")),
            ],
            options={"db_table": "drop_col_child"},
        ),
        migrations.AddIndex(model_name="main", index=models.Index(fields=["parent", "field_i1"], name="drop_col_i1")),
        migrations.AddConstraint(
            model_name="main", constraint=models.UniqueConstraint(fields=["parent", "field_u1"], name="drop_col_u1"),
        ),
    ]
