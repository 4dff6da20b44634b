"""SQLite pragmas, applied to every new connection by the one `connection_created` receiver.

WAL for readers beside the writer; `busy_timeout` so a writer waits rather than fails.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

DISPATCH_UID = "songsgen.db.sqlite.apply_pragmas"


def pragmas() -> dict[str, str | int]:
    """The pragmas every SQLite connection gets, in the order they are applied."""
    return {
        "journal_mode": "WAL",
        "synchronous": "NORMAL",
        "foreign_keys": "ON",
        "busy_timeout": int(settings.SQLITE_BUSY_TIMEOUT_MS),
        "cache_size": int(settings.SQLITE_CACHE_SIZE),
    }


def apply_pragmas(sender: Any = None, connection: BaseDatabaseWrapper | None = None, **kwargs: Any) -> None:
    """Set our pragmas on a new SQLite connection; leave every other vendor alone."""
    if connection is None or connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        for name, value in pragmas().items():
            cursor.execute(f"PRAGMA {name} = {value}")


def install() -> None:
    """Connect the receiver (idempotent) and cover connections opened before the app was ready."""
    connection_created.connect(apply_pragmas, dispatch_uid=DISPATCH_UID)
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            apply_pragmas(connection=conn)
