"""What a restore would replace and with what, in the words the confirmation prompt uses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from django.apps import apps
from django.db import DatabaseError, connections
from django.db.models import Max

from songsgen.db.backup.live import sqlite_path

TIMESTAMP_FIELD = "created_at"  # every table of ours records when its rows were created


def size_text(size: int) -> str:
    """A byte count as a person reads it: 6.3 KiB, 236.0 MiB."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover


def time_text(moment: datetime | None) -> str:
    return "unknown time" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def newest_row(alias: str) -> datetime | None:
    """The newest `created_at` over every model that has one, or None (no rows, no tables)."""
    newest: datetime | None = None
    for model in apps.get_models():
        if not model._meta.managed or TIMESTAMP_FIELD not in {f.name for f in model._meta.concrete_fields}:
            continue
        try:
            found = model._base_manager.using(alias).aggregate(newest=Max(TIMESTAMP_FIELD))["newest"]
        except DatabaseError:  # a table this database does not have (yet)
            continue
        if found is not None and (newest is None or found > newest):
            newest = found
    return newest


def live_database(alias: str) -> str:
    """The live database: where it is, its size, and when its newest row was written."""
    connection = connections[alias]
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        path = sqlite_path(settings_dict)
        if not path.is_file() or path.stat().st_size == 0:
            return f"the SQLite database {path} (it does not exist yet)"
        wal = Path(f"{path}-wal")
        size = path.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)
        where = f"the SQLite database {path}"
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            size = int(cursor.fetchone()[0])
        host = settings_dict.get("HOST") or "localhost"
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        where = f"the {connection.display_name} database {settings_dict['NAME']!r} on {host}{port}"
    newest = newest_row(alias)
    latest = "no rows yet" if newest is None else f"newest row created {time_text(newest)}"
    return f"{where} ({size_text(size)}, {latest})"
