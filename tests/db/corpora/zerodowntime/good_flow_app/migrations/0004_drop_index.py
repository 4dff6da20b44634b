from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("good_flow_app", "0003_add_index")]
    operations = [
        migrations.RemoveIndex(model_name="testtable", name="good_flow_field_idx"),
    ]
