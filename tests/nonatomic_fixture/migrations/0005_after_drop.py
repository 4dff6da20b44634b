from django.db import migrations

from ._steps import step


class Migration(migrations.Migration):
    """Non-atomic, after the drop: the group holding 0004 commits before it runs."""

    atomic = False

    dependencies = [("nonatomic_fixture", "0004_drop")]

    operations = [
        migrations.RunPython(step("0005"), migrations.RunPython.noop),
    ]
