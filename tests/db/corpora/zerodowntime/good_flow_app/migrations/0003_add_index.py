from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("good_flow_app", "0002_add_nullable_field")]
    operations = [
        migrations.AddIndex(model_name="testtable", index=models.Index(fields=["field"], name="good_flow_field_idx")),
    ]
