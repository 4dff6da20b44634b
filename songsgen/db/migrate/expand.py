"""The expand step of a change no database makes in place: a new column kept in step with an old one.

A type change that rewrites the table, a rename, a value computed per row: add the new column
(nullable), keep it in step with `source` by a trigger, backfill the rows there already in short
batches. Then deploy code that reads the new column, and contract in a later migration
(`FinishExpand` drops the trigger; then drop the old column). Use it in a migration with
`atomic = False`, so each batch commits on its own."""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import truncate_name
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

from songsgen.db.migrate.backfill import backfill


def _names(connection: BaseDatabaseWrapper, table: str, column: str) -> str:
    return truncate_name(f"{table}_{column}_in_step", connection.ops.max_name_length())


def keep_in_step_sql(connection: BaseDatabaseWrapper, table: str, source: str, column: str, expression: str
                     ) -> list[str]:
    """The trigger that sets `column` from `source` on every insert and on every update of `source`."""
    qn, name = connection.ops.quote_name, _names(connection, table, column)
    new = expression.format(source=f"NEW.{qn(source)}")
    if connection.vendor == "postgresql":
        return [
            f"CREATE OR REPLACE FUNCTION {qn(name)}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"NEW.{qn(column)} := {new}; RETURN NEW; END $$",
            f"CREATE TRIGGER {qn(name)} BEFORE INSERT OR UPDATE OF {qn(source)} ON {qn(table)} "
            f"FOR EACH ROW EXECUTE FUNCTION {qn(name)}()",
        ]
    set_new = f"UPDATE {qn(table)} SET {qn(column)} = {new} WHERE rowid = NEW.rowid;"
    return [f"CREATE TRIGGER {qn(name + '_insert')} AFTER INSERT ON {qn(table)} BEGIN {set_new} END",
            f"CREATE TRIGGER {qn(name + '_update')} AFTER UPDATE OF {qn(source)} ON {qn(table)} BEGIN {set_new} END"]


def stop_keeping_in_step_sql(connection: BaseDatabaseWrapper, table: str, column: str) -> list[str]:
    qn, name = connection.ops.quote_name, _names(connection, table, column)
    if connection.vendor == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {qn(name)} ON {qn(table)}", f"DROP FUNCTION IF EXISTS {qn(name)}()"]
    return [f"DROP TRIGGER IF EXISTS {qn(name + suffix)}" for suffix in ("_insert", "_update")]


class ExpandColumn(Operation):
    """Add `name` (nullable) to `model_name`, kept equal to `expression` of `source` (SQL, `{source}` for the
    old column's value, e.g. "CAST({source} AS bigint)") by a trigger, and backfill the existing rows."""

    reversible = True
    reduces_to_sql = False

    def __init__(self, model_name: str, name: str, field: Any, source: str, expression: str = "{source}") -> None:
        if not field.null:
            raise ValueError(f"ExpandColumn adds {name} as a nullable column: give null=True, and make it NOT NULL "
                             "in a later migration, once every row is filled")
        self.model_name, self.name, self.field, self.source, self.expression = (
            model_name, name, field, source, expression)

    @property
    def model_name_lower(self) -> str:
        return self.model_name.lower()

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (self.__class__.__name__, [], {"model_name": self.model_name, "name": self.name, "field": self.field,
                                              "source": self.source, "expression": self.expression})

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        state.add_field(app_label, self.model_name_lower, self.name, self.field, True)

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: ProjectState,
                          to_state: ProjectState) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        connection = schema_editor.connection
        if not self.allow_migrate_model(connection.alias, model):
            return
        field, source = model._meta.get_field(self.name), model._meta.get_field(self.source)
        schema_editor.add_field(model, field)
        table, qn = model._meta.db_table, connection.ops.quote_name
        for sql in keep_in_step_sql(connection, table, source.column, field.column, self.expression):
            schema_editor.execute(sql, None)
        if schema_editor.collect_sql:  # sqlmigrate, the safety check: the batches cannot be written out
            schema_editor.execute(f"-- backfill {table}.{field.column} from {source.column}, in batches", None)
            return
        backfill(connection, table=table, pk=model._meta.pk.column,
                 set_sql=f"{qn(field.column)} = {self.expression.format(source=qn(source.column))}",
                 pending=f"{qn(field.column)} IS NULL AND {qn(source.column)} IS NOT NULL")

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: ProjectState,
                           to_state: ProjectState) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        field = model._meta.get_field(self.name)
        for sql in stop_keeping_in_step_sql(schema_editor.connection, model._meta.db_table, field.column):
            schema_editor.execute(sql, None)
        schema_editor.remove_field(model, field)

    def describe(self) -> str:
        return f"Expand {self.model_name}.{self.name} from {self.source}, kept in step by a trigger, backfilled"

    @property
    def migration_name_fragment(self) -> str:
        return f"expand_{self.model_name_lower}_{self.name.lower()}"


class FinishExpand(Operation):
    """The contract step's start: the trigger that kept `name` in step with `source` is dropped (code writes
    `name` itself now). Reversed, it is created again."""

    reversible = True
    reduces_to_sql = True

    def __init__(self, model_name: str, name: str, source: str, expression: str = "{source}") -> None:
        self.model_name, self.name, self.source, self.expression = model_name, name, source, expression

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (self.__class__.__name__, [], {"model_name": self.model_name, "name": self.name,
                                              "source": self.source, "expression": self.expression})

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        """The state is unchanged: only the database's trigger goes."""

    def _model(self, app_label: str, state: ProjectState) -> Any:
        return state.apps.get_model(app_label, self.model_name)

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: ProjectState,
                          to_state: ProjectState) -> None:
        model = self._model(app_label, to_state)
        column = model._meta.get_field(self.name).column
        for sql in stop_keeping_in_step_sql(schema_editor.connection, model._meta.db_table, column):
            schema_editor.execute(sql, None)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: ProjectState,
                           to_state: ProjectState) -> None:
        model = self._model(app_label, to_state)
        meta = model._meta
        for sql in keep_in_step_sql(schema_editor.connection, meta.db_table, meta.get_field(self.source).column,
                                    meta.get_field(self.name).column, self.expression):
            schema_editor.execute(sql, None)

    def describe(self) -> str:
        return f"Stop keeping {self.model_name}.{self.name} in step with {self.source}"
