from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("good_flow_app", "0001_initial")]
    operations = [
        migrations.AddField(model_name="testtable", name="extra", field=models.CharField(max_length=20, null=True)),
    ]
