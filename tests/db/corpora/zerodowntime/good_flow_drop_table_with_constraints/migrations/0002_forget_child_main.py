from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("good_flow_drop_table_with_constraints", "0001_initial")]
    operations = [
        # Our own DROP_COLUMN advice, first half: the code forgets the column, the database keeps it.
        migrations.SeparateDatabaseAndState(state_operations=[migrations.RemoveField(model_name="child", name="main")]),
    ]
