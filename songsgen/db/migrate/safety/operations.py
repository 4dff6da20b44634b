"""Our own safety checks: each operation judged by every rule of `safety_rules` against the migration state.

Fields and models are read from the state's models (`apps.get_model(...)._meta.get_field(...)`), never from
an operation's unbound field, so a foreign key's type resolves. What a rename changes is read from the
tables and columns the two states map to, so a rename that keeps its `db_table`/`db_column` is no rename.
Tables created earlier in the same plan are never unsafe to change: nothing running uses them yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations import operations as ops
from django.db.migrations.state import ProjectState

from songsgen.db.migrate.safety.rules import RULES, Change, owns_table, type_change_rewrites

Found = list[tuple[str, str]]  # (code, detail)


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
        self.created: set[tuple[str, str]] = set()  # models created earlier in the plan
        self.created_tables: set[str] = set()
        self.widened: dict[tuple[str, str], str] = {}  # (table, column) → "varchar(9) to varchar(20)": no rewrite

    def _existing(self, app_label: str, model_name: str) -> bool:
        return (app_label, model_name.lower()) not in self.created

    def check(self, app_label: str, op: ops.base.Operation) -> Found:
        """(code, detail) pairs for one operation; the state moves past it."""
        before = self.state.clone()
        op.state_forwards(app_label, self.state)
        if isinstance(op, ops.SeparateDatabaseAndState):
            return self._separate(app_label, op, before)
        change = self._change(app_label, op, before, self.state)
        if change is None:
            return []
        found = [(code, detail) for code, rule in RULES.items() for detail in rule.detect(change)]
        self._note_widening(change)
        return found

    def _change(self, app_label: str, op: Any, before: ProjectState, after: ProjectState) -> Change | None:
        """The operation as the rules read it, the plan's bookkeeping done; None when no rule may apply."""
        def change(old: Any = None, new: Any = None) -> Change:
            return Change(app_label, op, before, after, old, new, self.connection, self.created_tables,
                          self.big_table)

        if isinstance(op, ops.CreateModel):
            self.created.add((app_label, op.name_lower))
            model = after.apps.get_model(app_label, op.name)
            self.created_tables |= {model._meta.db_table, *_through_tables(model)}
            return None
        if isinstance(op, ops.RenameModel | ops.AlterModelTable | ops.RenameField):
            if isinstance(op, ops.RenameModel) and not self._existing(app_label, op.old_name):
                self.created.add((app_label, op.new_name_lower))
            return self._follow_created(change())
        model_name = getattr(op, "model_name", None) or getattr(op, "name", "")
        if not isinstance(model_name, str) or not model_name or not self._existing(app_label, model_name):
            return None
        try:
            old = before.apps.get_model(app_label, model_name)
        except LookupError:
            return None  # a state-only model (e.g. RunSQL's) or a custom operation's: the SQL judges see it
        if not owns_table(old):
            return None  # proxy, unmanaged or swapped: no SQL
        new: Any = None if isinstance(op, ops.DeleteModel) else after.apps.get_model(app_label, model_name)
        if isinstance(op, ops.AddField) and new._meta.get_field(op.name).many_to_many:
            self.created_tables.add(new._meta.get_field(op.name).m2m_db_table())
            return None  # a new table
        return self._follow_created(change(old, new)) if isinstance(op, ops.AlterField) else change(old, new)

    def _follow_created(self, change: Change) -> Change:
        """A table created earlier in the plan stays new under its new name."""
        gone = set(change.tables_before) - set(change.tables_after)
        if any(table in self.created_tables for table in gone):
            self.created_tables.update(set(change.tables_after) - set(change.tables_before))
        return change

    def _note_widening(self, change: Change) -> None:
        """Record a column type change that rewrites nothing, for overruling the SQL judges (`safety._Ours`)."""
        if change.altered:
            old, new = change.altered
            old_type, new_type = old.db_type(self.connection), new.db_type(self.connection)
            if old_type != new_type and not type_change_rewrites(old_type, new_type):
                self.widened[new.model._meta.db_table, new.column] = f"{old_type} to {new_type}"

    def _separate(self, app_label: str, op: ops.SeparateDatabaseAndState, before: ProjectState) -> Found:
        """The database operations judged in their own copy of the state; the state follows state_operations."""
        database = OperationChecker(self.connection, before.clone(), self.big_table)
        database.created, database.created_tables, database.widened = self.created, self.created_tables, self.widened
        return [found for db_op in op.database_operations for found in database.check(app_label, db_op)]
