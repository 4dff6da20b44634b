from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("good_flow_drop_column_with_constraints", "0001_initial")]
    operations = [
        # The worst case the peer emulates: the state forgets what the database keeps (state only).
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.RemoveIndex(model_name="main", name="drop_col_i1"),
            migrations.RemoveConstraint(model_name="main", name="drop_col_u1"),
            migrations.RemoveField(model_name="child", name="main"),
        ]),
    ]
