from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("good_flow_drop_table_with_constraints", "0002_forget_child_main")]
    operations = [
        migrations.DeleteModel(name="Main"),
    ]
