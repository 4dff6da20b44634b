"""Our SQLite schema editor: Django's, with every rebuild and index build of a big table done online.

Django works out the rebuild (`_remake_table`); its statements are recorded instead of run and
handed to `rebuild.Rebuild`. A table under SONGSGEN_ONLINE_REBUILD_MIN_ROWS rows, `sqlmigrate`'s
collected SQL, and a table the online way does not suit take Django's way unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.backends.sqlite3.schema import DatabaseSchemaEditor

from songsgen.db.migrate import observe
from songsgen.db.migrate.online import ddl
from songsgen.db.migrate.online.rebuild import Rebuild
from songsgen.db.rowcounts import table_rows_at_least


def min_rows() -> int:
    return int(getattr(settings, "ONLINE_REBUILD_MIN_ROWS", 10_000))


class OnlineSchemaEditor(DatabaseSchemaEditor):
    """Rebuilds (`_remake_table`) and index builds of a table holding at least `min_rows()` rows, online."""

    def goes_online(self, table: str) -> bool:
        """Outside a transaction, on a big table; inside one only when every rebuild is to go our way (0 rows):
        a transaction holds the lock throughout anyway, and Django's rebuild is the quicker there."""
        if self.collect_sql:
            return False
        if self.connection.in_atomic_block:
            return min_rows() == 0
        return table_rows_at_least(self.connection, table, min_rows())

    def _remake_table(self, model: Any, create_field: Any = None, delete_field: Any = None,
                      alter_fields: Any = None) -> None:
        table = model._meta.db_table
        stock = super()._remake_table  # type: ignore[misc]
        if not self.goes_online(table):
            stock(model, create_field, delete_field, alter_fields)
            return
        recorded = self._recorded(lambda: stock(model, create_field, delete_field, alter_fields))
        spec = ddl.parse(recorded, table)
        stats = None if spec is None else Rebuild(self.connection, spec, observe.progress_line).run()
        if spec is None or stats is None:
            for sql, params in recorded:  # not a four-statement rebuild, or no single primary key: Django's way
                self.execute(sql, params)
            return
        observe.done(stats)
        for sql, params in spec.after:
            self.execute(sql, params)

    def _recorded(self, run: Callable[[], None]) -> list[ddl.Statement]:
        """The statements `run` would execute, recorded instead (deferred ones included)."""
        recorded: list[ddl.Statement] = []

        def record(sql: Any, params: Any = ()) -> None:
            recorded.append((sql, params))

        self.execute = record  # type: ignore[method-assign]
        try:
            run()
        finally:
            del self.execute
        return recorded

    def add_index(self, model: Any, index: Any) -> None:
        """A big table gets its index by an online rebuild (the model passed in already has it)."""
        if index in model._meta.indexes and self.goes_online(model._meta.db_table):
            self._remake_table(model)
        else:
            super().add_index(model, index)

    def add_constraint(self, model: Any, constraint: Any) -> None:
        """Django builds a partial or expression unique constraint as an index: online on a big table. One
        SQLite cannot hold (covering, deferrable) Django skips without a statement: so do we, no rebuild."""
        if constraint in model._meta.constraints and constraint.create_sql(model, self) is not None \
                and self.goes_online(model._meta.db_table):
            self._remake_table(model)
        else:
            super().add_constraint(model, constraint)

    def add_field(self, model: Any, field: Any) -> None:
        """A column Django adds in place still needs its index built, or (SQLite 3.37+) its CHECK tested
        against every row there, under the write lock: online on a big table."""
        if field.concrete and not field.many_to_many and (field.db_index or field.unique or self._checked(field)) \
                and self.goes_online(model._meta.db_table):
            self._remake_table(model, create_field=field)
        else:
            super().add_field(model, field)

    def remove_field(self, model: Any, field: Any) -> None:
        """SQLite's DROP COLUMN rewrites every row under the write lock: online on a big table."""
        if field.concrete and not field.many_to_many and field.db_parameters(connection=self.connection)["type"] \
                and self.goes_online(model._meta.db_table):
            self._remake_table(model, delete_field=field)
        else:
            super().remove_field(model, field)

    def _checked(self, field: Any) -> bool:
        """Whether the column carries a CHECK (a JSONField's JSON_VALID, a positive integer's >= 0)."""
        return bool(field.db_parameters(connection=self.connection).get("check"))
