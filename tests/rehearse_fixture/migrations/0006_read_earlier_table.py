"""Reads the table 0001 created in the same plan (through the default manager) and records what it found."""

from django.db import migrations


def forward(apps, schema_editor):
    Ledger = apps.get_model("rehearse_fixture", "Ledger")
    Ledger.objects.create(step="read", amount=Ledger.objects.count())


class Migration(migrations.Migration):

    dependencies = [
        ("rehearse_fixture", "0005_atomic_without_using"),
    ]

    operations = [
        migrations.RunPython(forward, migrations.RunPython.noop),
    ]
