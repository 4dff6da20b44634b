from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("good_flow_drop_column_with_constraints", "0003_remove_field_i1")]
    operations = [
        migrations.RemoveField(model_name="main", name="field_u1"),
    ]
