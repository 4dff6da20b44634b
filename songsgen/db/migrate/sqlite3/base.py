"""ENGINE "songsgen.db.migrate.sqlite3": Django's SQLite backend whose schema editor rebuilds big tables online."""

from __future__ import annotations

from django.db.backends.sqlite3 import base

from songsgen.db.migrate.online.editor import OnlineSchemaEditor


class DatabaseWrapper(base.DatabaseWrapper):
    SchemaEditorClass = OnlineSchemaEditor
