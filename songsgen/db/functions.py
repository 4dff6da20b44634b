"""Database functions that mean the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Func
from django.db.models.sql.compiler import SQLCompiler


class CodePointOrder(Func):
    """Its text compared and indexed in code-point order: a prefix's strings are then one range on every engine.

    SQLite compares text by code point already. PostgreSQL uses the database's collation, and under a language
    collation (en_US…) `'lizzy' < 'li{'` is false, so a range search for `liz` would miss `lizzy`; COLLATE "C"
    restores code-point order (equality is unchanged: PostgreSQL's collations are deterministic)."""

    template = "%(expressions)s"
    arity = 1

    def as_postgresql(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper,
                      **extra_context: Any) -> tuple[str, Any]:
        return self.as_sql(compiler, connection, template='(%(expressions)s) COLLATE "C"', **extra_context)
