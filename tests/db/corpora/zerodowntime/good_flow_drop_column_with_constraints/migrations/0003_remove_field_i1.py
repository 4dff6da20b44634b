from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("good_flow_drop_column_with_constraints", "0002_forget_constraints")]
    operations = [
        migrations.RemoveField(model_name="main", name="field_i1"),
    ]
