"""Our own safety checks: each operation judged against the migration state before and after it.

Fields and models are read from the state's models (`apps.get_model(...)._meta.get_field(...)`), never from
an operation's unbound field, so a foreign key's type resolves. What a rename changes is read from the
tables and columns the two states map to, so a rename that keeps its `db_table`/`db_column` is no rename.
Tables created earlier in the same plan are never unsafe to change: nothing running uses them yet.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations import operations as ops
from django.db.migrations.state import ProjectState
from django.db.models.constraints import BaseConstraint

Found = list[tuple[str, str]]  # (code, detail)


def _varchar_len(db_type: str | None) -> int | None:
    match = re.fullmatch(r"(?:varchar|character varying)\((\d+)\)", (db_type or "").lower())
    return int(match.group(1)) if match else None


def type_change_rewrites(old: str | None, new: str | None) -> bool:
    """Whether PostgreSQL rewrites the table to change a column from type `old` to `new`."""
    if old == new:
        return False
    old_len, new_len = _varchar_len(old), _varchar_len(new)
    if old_len is not None and (new == "text" or (new_len is not None and new_len >= old_len)):
        return False  # PostgreSQL widens varchar, or turns it into text, without a rewrite
    return True


def db_default_fills(field: Any) -> bool:
    """Whether a column's database default gives old writers a value: `db_default=None` is DEFAULT NULL."""
    if not field.has_db_default():
        return False
    default = field.db_default  # kept as given; Field._db_default_expression wraps it in Value()
    return not (default is None or isinstance(default, models.Value) and default.value is None)


def _owns_table(model: Any) -> bool:
    meta = model._meta
    return bool(meta.managed and not meta.proxy and not meta.swapped)


def _tables(state: ProjectState) -> dict[str, frozenset[str]]:
    """Every table the state's models own (auto-created many-to-many tables too), with its columns."""
    return {
        model._meta.db_table: frozenset(f.column for f in model._meta.local_concrete_fields)
        for model in state.apps.get_models(include_auto_created=True) if _owns_table(model)
    }


def _through_tables(model: Any) -> set[str]:
    """The tables of a model's own many-to-many fields (the `through` of a field may not be rendered yet)."""
    return {f.m2m_db_table() for f in model._meta.local_many_to_many
            if f.remote_field.through is None or f.remote_field.through._meta.auto_created}


class OperationChecker:
    """Judges a plan's operations in order, keeping the migration state (`state`) up to date as it goes."""

    def __init__(self, connection: BaseDatabaseWrapper, state: ProjectState, big: Callable[[str], bool]) -> None:
        self.connection = connection
        self.state = state
        self.big_table = big
        self.pg = connection.vendor == "postgresql"
        self.created: set[tuple[str, str]] = set()  # models created earlier in the plan
        self.created_tables: set[str] = set()
        self.widened: dict[tuple[str, str], str] = {}  # (table, column) → "varchar(9) to varchar(20)": no rewrite

    def _model(self, state: ProjectState, app_label: str, name: str) -> Any:
        return state.apps.get_model(app_label, name)

    def _editor(self) -> Any:
        """A schema editor, never entered: to ask what Django would alter (its own rule, not a guess of ours)."""
        return self.connection.schema_editor(collect_sql=True)

    def _existing(self, app_label: str, model_name: str) -> bool:
        return (app_label, model_name.lower()) not in self.created

    def _big(self, model: Any) -> bool:
        return model._meta.db_table not in self.created_tables and self.big_table(model._meta.db_table)

    def check(self, app_label: str, op: ops.base.Operation) -> Found:
        """(code, detail) pairs for one operation; the state moves past it."""
        before = self.state.clone()
        op.state_forwards(app_label, self.state)
        return self._judge(app_label, op, before, self.state)

    def _judge(self, app_label: str, op: Any, before: ProjectState, after: ProjectState) -> Found:
        if isinstance(op, ops.SeparateDatabaseAndState):
            return self._separate(app_label, op, before)
        if isinstance(op, ops.CreateModel):
            self.created.add((app_label, op.name_lower))
            model = self._model(after, app_label, op.name)
            self.created_tables |= {model._meta.db_table, *_through_tables(model)}
            return []
        if isinstance(op, ops.RenameModel | ops.AlterModelTable | ops.RenameField):
            if isinstance(op, ops.RenameModel) and not self._existing(app_label, op.old_name):
                self.created.add((app_label, op.new_name_lower))
            return self._renames(before, after)
        model_name = getattr(op, "model_name", None) or getattr(op, "name", "")
        if not isinstance(model_name, str) or not model_name or not self._existing(app_label, model_name):
            return []
        try:
            old_model = self._model(before, app_label, model_name)
        except LookupError:
            return []  # a state-only model (e.g. RunSQL's) or a custom operation's: the SQL judges see it
        if not _owns_table(old_model):
            return []  # proxy, unmanaged or swapped: no SQL
        if isinstance(op, ops.DeleteModel):
            return [("DROP_TABLE", f"drops table {old_model._meta.db_table}")]
        new_model = self._model(after, app_label, model_name)
        if isinstance(op, ops.AddField):
            return self._add_field(new_model._meta.get_field(op.name))
        if isinstance(op, ops.RemoveField):
            field = old_model._meta.get_field(op.name)
            if field.many_to_many:
                return [("DROP_TABLE", f"drops many-to-many table {field.m2m_db_table()}")]
            if field.column is None:
                return []  # a ForeignObject: no column of its own
            return [("DROP_COLUMN", f"drops column {old_model._meta.db_table}.{field.column}")]
        if isinstance(op, ops.AlterField):
            return [*self._renames(before, after), *self._alter_field(
                old_model._meta.get_field(op.name), new_model._meta.get_field(op.name))]
        if isinstance(op, ops.AlterUniqueTogether | ops.AlterIndexTogether):
            key = (app_label, op.name_lower)
            return self._together(op, before.models[key].options, after.models[key].options, new_model)
        if isinstance(op, ops.AlterOrderWithRespectTo):
            table, had = new_model._meta.db_table, old_model._meta.order_with_respect_to
            if op.order_with_respect_to and not had:
                return [("NOT_NULL", f"adds NOT NULL column {table}._order without db_default")]
            return [("DROP_COLUMN", f"drops column {table}._order")] if had and not op.order_with_respect_to else []
        if isinstance(op, ops.AddConstraint):
            return self._add_constraint(op, new_model)
        if isinstance(op, ops.AddIndex) and self.pg and not _concurrent(op) and self._big(new_model):
            return [("INDEX_NOT_CONCURRENT", f"builds index {op.index.name} without CONCURRENTLY")]
        return []

    def _separate(self, app_label: str, op: ops.SeparateDatabaseAndState, before: ProjectState) -> Found:
        """The database operations judged in their own copy of the state; the state follows state_operations."""
        database = OperationChecker(self.connection, before.clone(), self.big_table)
        database.created, database.created_tables, database.widened = self.created, self.created_tables, self.widened
        return [found for db_op in op.database_operations for found in database.check(app_label, db_op)]

    def _renames(self, before: ProjectState, after: ProjectState) -> Found:
        """Tables and columns whose names change, other than those created earlier in the plan."""
        old, new = _tables(before), _tables(after)
        gone, came = sorted(set(old) - set(new)), sorted(set(new) - set(old))
        if any(table in self.created_tables for table in gone):
            self.created_tables.update(came)
            gone = [table for table in gone if table not in self.created_tables]
        found = [("RENAME_TABLE", f"renames table {', '.join(gone)} to {', '.join(came)}")] if gone else []
        for table in sorted(set(old) & set(new) - self.created_tables):
            lost, got = sorted(old[table] - new[table]), sorted(new[table] - old[table])
            if lost:
                found.append(("RENAME_COLUMN", f"renames column {table}.{', '.join(lost)} to {', '.join(got)}"))
        return found

    def _add_field(self, field: Any) -> Found:
        model, found = field.model, []
        where = f"{model._meta.db_table}.{field.column}"
        if field.many_to_many:
            self.created_tables.add(field.m2m_db_table())
            return []  # a new table
        if field.column is None:
            return []  # a ForeignObject: no column of its own
        if not field.null and not db_default_fills(field) and not field.generated:
            found.append(("NOT_NULL", f"adds NOT NULL column {where} without a db_default that fills it"))
        if field.unique and self._big(model):
            found.append(("ADD_UNIQUE", f"adds unique column {where} to a big table"))
        indexed = field.db_index or field.unique
        if self.pg and indexed and self._big(model):
            found.append(("INDEX_NOT_CONCURRENT", f"indexes new column {where} under lock"))
        if self.pg and field.remote_field is not None and getattr(field, "db_constraint", False) and self._big(model):
            found.append(("CONSTRAINT_NOT_VALID", f"adds a validated foreign key {where}"))
        if self.pg and field.generated and field.db_persist and self._big(model):
            found.append(("TABLE_REWRITE", f"adds stored generated column {where}: the table is rewritten under "
                          "an exclusive lock"))
        return found

    def _alter_field(self, old: Any, new: Any) -> Found:
        model, found = new.model, []
        where = f"{model._meta.db_table}.{new.column}"
        if old.many_to_many or new.many_to_many or old.column is None or new.column is None:
            return []  # no column: a through table (whose renames _renames judges), or a ForeignObject
        if old.null and not new.null:
            found.append(("NOT_NULL", f"makes {where} NOT NULL"))
        if new.unique and not old.unique and self._big(model):
            found.append(("ADD_UNIQUE", f"makes {where} unique on a big table"))
        if self.pg and (new.db_index or new.unique) and not (old.db_index or old.unique) and self._big(model):
            found.append(("INDEX_NOT_CONCURRENT", f"indexes {where} under lock"))
        if self.pg and new.remote_field is not None and getattr(new, "db_constraint", False) and self._big(model):
            if not (old.remote_field is not None and getattr(old, "db_constraint", False)):
                found.append(("CONSTRAINT_NOT_VALID", f"adds a validated foreign key {where}"))
            elif self._editor()._field_should_be_altered(old, new, ignore={"db_comment"}):
                found.append(("CONSTRAINT_NOT_VALID", f"re-creates the foreign key of {where}, validated under lock "
                              "(Django drops and re-adds it to alter the column); alter the column with RunSQL "
                              "inside SeparateDatabaseAndState instead"))
        old_type, new_type = old.db_type(self.connection), new.db_type(self.connection)
        if old_type != new_type and not type_change_rewrites(old_type, new_type):
            self.widened[model._meta.db_table, new.column] = f"{old_type} to {new_type}"
        elif self.pg and type_change_rewrites(old_type, new_type) and self._big(model):
            found.append(("COLUMN_TYPE_REWRITE", f"changes {where} from {old_type} to {new_type}: the table is "
                          "rewritten under an exclusive lock"))
        return found

    def _together(self, op: Any, old: dict[str, Any], new: dict[str, Any], model: Any) -> Found:
        added = set(new.get(op.option_name) or ()) - set(old.get(op.option_name) or ())
        if not added or not self._big(model):
            return []
        if isinstance(op, ops.AlterUniqueTogether):
            return [("ADD_UNIQUE", f"adds unique_together {sorted(added)} to big table {model._meta.db_table}")]
        if self.pg:
            return [("INDEX_NOT_CONCURRENT", f"adds index_together {sorted(added)} to big table "
                     f"{model._meta.db_table} without CONCURRENTLY")]
        return []

    def _add_constraint(self, op: Any, model: Any) -> Found:
        from django.contrib.postgres.operations import AddConstraintNotValid

        constraint: BaseConstraint = op.constraint
        big = self._big(model)  # False for a model created in this plan
        if isinstance(constraint, models.UniqueConstraint) and big:
            return [("ADD_UNIQUE", f"adds unique constraint {constraint.name} on a big table")]
        if self.pg and big and not isinstance(op, AddConstraintNotValid):
            return [("CONSTRAINT_NOT_VALID", f"adds constraint {constraint.name} validated under lock")]
        return []


def _concurrent(op: Any) -> bool:
    from django.contrib.postgres.operations import AddIndexConcurrently

    return isinstance(op, AddIndexConcurrently)
