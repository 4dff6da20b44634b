from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("bad_rollback_flow_change_char_type_that_safe_app", "0001_initial")]
    operations = [
        migrations.AlterField(model_name="testtable", name="field", field=models.CharField(max_length=120)),
    ]
