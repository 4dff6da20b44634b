"""ENGINE "tests.django_suite.nonatomic": SQLite with the schema editor always non-atomic, as the safe migrate
runs a migration that rebuilds a big table (operation by operation): our online rebuilds then commit as they
go, chunk by chunk, which Django's atomic schema editor never lets them do. SUITE_SCHEMA_EDITOR picks the
editor: "stock" (Django's, the reference) or "online" (ours)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.backends.sqlite3 import base
from django.db.backends.sqlite3.schema import DatabaseSchemaEditor

from songsgen.db.migrate.online.editor import OnlineSchemaEditor


class StockNonAtomic(DatabaseSchemaEditor):
    def __init__(self, connection: Any, collect_sql: bool = False, atomic: bool = True) -> None:
        super().__init__(connection, collect_sql, atomic=False)


class OnlineNonAtomic(OnlineSchemaEditor):
    def __init__(self, connection: Any, collect_sql: bool = False, atomic: bool = True) -> None:
        super().__init__(connection, collect_sql, atomic=False)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def SchemaEditorClass(self) -> Any:  # type: ignore[override]  # noqa: N802 - Django's name
        return OnlineNonAtomic if getattr(settings, "SUITE_SCHEMA_EDITOR", "stock") == "online" else StockNonAtomic
