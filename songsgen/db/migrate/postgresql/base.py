"""ENGINE "songsgen.db.migrate.postgresql": Django's PostgreSQL backend whose schema editor writes safe DDL."""

from __future__ import annotations

from django.db.backends.postgresql import base

from songsgen.db.migrate.safeddl.editor import SafeSchemaEditor


class DatabaseWrapper(base.DatabaseWrapper):
    SchemaEditorClass = SafeSchemaEditor
