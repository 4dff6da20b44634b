from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("bad_flow_change_char_type_that_unsafe_app", "0001_initial")]
    operations = [
        migrations.AlterField(model_name="testtable", name="field", field=models.CharField(max_length=100)),
    ]
