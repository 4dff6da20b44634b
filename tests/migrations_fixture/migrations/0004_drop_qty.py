from django.db import migrations


class Migration(migrations.Migration):
    """Unsafe on purpose: drops a column that running code may still read."""

    dependencies = [
        ("migrations_fixture", "0003_fail_on_demand"),
    ]

    operations = [
        migrations.RemoveField(model_name="widget", name="qty"),
    ]
