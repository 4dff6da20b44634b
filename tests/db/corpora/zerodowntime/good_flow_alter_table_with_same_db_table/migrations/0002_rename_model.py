from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("good_flow_alter_table_with_same_db_table", "0001_initial")]
    operations = [
        migrations.RenameModel(old_name="Before", new_name="After"),
    ]
