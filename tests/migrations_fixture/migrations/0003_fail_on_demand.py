"""Fails as SONGSGEN_FIXTURE_MODE says: "fail" raises half-way, "verify" drops a column behind the
migration state's back, "orphan" inserts a row breaking a foreign key, "die" SIGKILLs its own process, "hang" writes SONGSGEN_FIXTURE_FLAG and sleeps SONGSGEN_FIXTURE_HANG seconds (120: to be killed), then passes;
otherwise it passes.
SONGSGEN_FIXTURE_ATOMIC=0 makes it non-atomic, so on PostgreSQL the plan needs the pg_dump snapshot."""

import os
import signal
import time
from pathlib import Path

from django.db import migrations


def forwards(apps, schema_editor):
    mode = os.environ.get("SONGSGEN_FIXTURE_MODE", "")
    Widget = apps.get_model("migrations_fixture", "Widget")
    Widget.objects.using(schema_editor.connection.alias).create(name="half-way", qty=2)
    if mode == "fail":
        raise RuntimeError("injected failure half-way through 0003")
    if mode == "orphan":  # a row whose foreign key points nowhere: the check before commit must catch it
        schema_editor.execute("INSERT INTO accounts_userevent (user_id, event_type, event_data, created_at) "
                              "VALUES (987654321, 'orphan', '{}', '2026-01-01 00:00:00')")
    if mode == "verify":
        schema_editor.execute("ALTER TABLE migrations_fixture_widget DROP COLUMN note")
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hang":
        Path(os.environ["SONGSGEN_FIXTURE_FLAG"]).write_text("applying 0003")
        time.sleep(float(os.environ.get("SONGSGEN_FIXTURE_HANG", "120")))


class Migration(migrations.Migration):

    atomic = os.environ.get("SONGSGEN_FIXTURE_ATOMIC", "1") != "0"

    dependencies = [
        ("migrations_fixture", "0002_touch_existing_rows"),
    ]

    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
