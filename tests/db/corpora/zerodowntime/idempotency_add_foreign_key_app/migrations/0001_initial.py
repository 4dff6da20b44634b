from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="RelatedTestTable",
            fields=[("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")), ("test_field_int", models.IntegerField(null=True))],
        ),
        migrations.CreateModel(
            name="TestTable",
            fields=[("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")), ("test_field_int", models.IntegerField()), ("test_field_str", models.CharField(max_length=10))],
        ),
    ]
