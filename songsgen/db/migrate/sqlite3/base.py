"""ENGINE "songsgen.db.migrate.sqlite3": Django's SQLite backend whose schema editor rebuilds big tables online."""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base

from songsgen.db.history import sqlite_file
from songsgen.db.migrate.online.editor import OnlineSchemaEditor


class DatabaseWrapper(base.DatabaseWrapper):
    SchemaEditorClass = OnlineSchemaEditor

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        # The data folder is made when the database is first opened, not by loading the settings:
        # a command that refuses before connecting leaves no folder behind.
        path = sqlite_file(self)
        if path is not None and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        return super().get_new_connection(conn_params)
