"""The migration safety rules: each one object (code, detector, fix, squawk equivalents) in one registry.

Adding a rule is one decorated function in this module (docs/architecture.md, "Adding a safety rule").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations import operations as ops
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState


def owns_table(model: Any) -> bool:
    """Whether a model's table is created and changed by its migrations (not a proxy, unmanaged or swapped)."""
    meta = model._meta
    return bool(meta.managed and not meta.proxy and not meta.swapped)


def tables(state: ProjectState) -> dict[str, frozenset[str]]:
    """Every table the state's models own (auto-created many-to-many tables too), with its columns."""
    return {
        model._meta.db_table: frozenset(f.column for f in model._meta.local_concrete_fields)
        for model in state.apps.get_models(include_auto_created=True) if owns_table(model)
    }


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


@dataclass
class Change:
    """One operation between the migration states before and after it, as every rule's detector reads it."""

    app_label: str
    op: Operation
    before: ProjectState
    after: ProjectState
    old: Any  # the model before it, when the operation changes a table of ours that exists already; else None
    new: Any  # the model after it (None with `old`, and after a DeleteModel)
    connection: BaseDatabaseWrapper
    created_tables: set[str]  # tables created earlier in the plan: nothing uses them yet
    big_table: Callable[[str], bool]  # whether a live table counts as big (SONGSGEN_MIGRATE_BIG_TABLE_ROWS)

    @property
    def pg(self) -> bool:
        return self.connection.vendor == "postgresql"

    def big(self, model: Any) -> bool:
        """Whether a model's table is big, and not created earlier in the plan."""
        return model._meta.db_table not in self.created_tables and self.big_table(model._meta.db_table)

    @property
    def renames(self) -> bool:
        """Whether the operation may rename a table or a column (an AlterField by its db_column or M2M table)."""
        if isinstance(self.op, ops.RenameModel | ops.AlterModelTable | ops.RenameField):
            return True
        return isinstance(self.op, ops.AlterField) and self.old is not None

    @cached_property
    def tables_before(self) -> dict[str, frozenset[str]]:
        return tables(self.before)

    @cached_property
    def tables_after(self) -> dict[str, frozenset[str]]:
        return tables(self.after)

    @cached_property
    def added(self) -> Any:
        """The column an AddField adds to an existing table; None for any other operation, or no column."""
        if not isinstance(self.op, ops.AddField) or self.new is None:
            return None
        field = self.new._meta.get_field(self.op.name)
        return None if field.many_to_many or field.column is None else field

    @cached_property
    def altered(self) -> tuple[Any, Any] | None:
        """An AlterField's column field before and after it; None for any other operation, or no column."""
        if not isinstance(self.op, ops.AlterField) or self.old is None:
            return None
        old, new = self.old._meta.get_field(self.op.name), self.new._meta.get_field(self.op.name)
        if old.many_to_many or new.many_to_many or old.column is None or new.column is None:
            return None  # a through table (whose renames RENAME_* judge), or a ForeignObject
        return old, new

    @property
    def constraint(self) -> Any:
        """The constraint an AddConstraint adds to an existing table; None for any other operation."""
        if not isinstance(self.op, ops.AddConstraint) or self.new is None:
            return None
        return cast(Any, self.op).constraint  # not in django-stubs' AddConstraint

    def together_added(self, kind: type[Operation]) -> list[Any]:
        """The field sets a unique_together (or index_together) operation of `kind` adds, sorted."""
        if not isinstance(self.op, kind) or self.old is None:
            return []
        key, option = (self.app_label, self.op.name_lower), self.op.option_name  # type: ignore[attr-defined]
        old, new = self.before.models[key].options, self.after.models[key].options
        return sorted(set(new.get(option) or ()) - set(old.get(option) or ()))


Detector = Callable[[Change], list[str]]  # one detail per unsafe thing the operation does; [] when safe


@dataclass(frozen=True)
class Rule:
    """One safety rule: its finding code, detector and fix, and what the SQL judges call the same problem."""

    code: str
    detect: Detector
    fix: str
    size_sensitive: bool = False  # flags only big tables: its squawk equivalents are overruled on small ones
    squawk: tuple[str, ...] = ()  # squawk rules meaning the same problem (kept once, marked agreed)
    squawk_scans: tuple[str, ...] = ()  # equivalents that matter only on a big table, whatever this rule flags
    linter: tuple[str, ...] = ()  # django-migration-linter codes meaning the same problem, where they differ


# Every rule by its code; a rule's findings on one operation follow those of the rules registered before it.
RULES: dict[str, Rule] = {}

# squawk rules that mean a django-migration-linter check no rule of ours has.
SQL_JUDGES_AGREE: dict[str, frozenset[str]] = {"require-concurrent-index-deletion": frozenset({"DROP_INDEX"})}


def rule(code: str, *, fix: str, size_sensitive: bool = False, squawk: tuple[str, ...] = (),
         squawk_scans: tuple[str, ...] = (), linter: tuple[str, ...] = ()) -> Callable[[Detector], Detector]:
    """Register the decorated detector as the rule `code`; a code without a fix, or registered twice, is refused."""
    def register(detect: Detector) -> Detector:
        if not code or not fix.strip():
            raise ValueError(f"safety rule {code!r} needs a code and a fix")
        if code in RULES:
            raise ValueError(f"safety rule {code} is registered twice")
        RULES[code] = Rule(code, detect, fix, size_sensitive, squawk, squawk_scans, linter)
        return detect
    return register


def squawk_same_as() -> dict[str, frozenset[str]]:
    """squawk rule → the codes (ours or the linter's) that mean the same problem."""
    same = {name: set(codes) for name, codes in SQL_JUDGES_AGREE.items()}
    for r in RULES.values():
        for name in (*r.squawk, *r.squawk_scans):
            same.setdefault(name, set()).update((r.code, *r.linter))
    return {name: frozenset(codes) for name, codes in same.items()}


def squawk_size_sensitive() -> frozenset[str]:
    """squawk rules about how long a lock is held while the table is read: harmless on a small table."""
    return frozenset(name for r in RULES.values() for name in (*(r.squawk if r.size_sensitive else ()),
                                                                 *r.squawk_scans))


def _where(field: Any) -> str:
    return f"{field.model._meta.db_table}.{field.column}"


def _validated_fk(field: Any) -> bool:
    return field.remote_field is not None and bool(getattr(field, "db_constraint", False))


@rule("DROP_COLUMN", squawk=("ban-drop-column",),
      fix="Stop using the field in code and deploy that first; drop it in a later release "
      "(or keep the column and remove the field with SeparateDatabaseAndState).")
def drop_column(change: Change) -> list[str]:
    op, old = change.op, change.old
    if isinstance(op, ops.RemoveField) and old is not None:
        field = old._meta.get_field(op.name)
        if not field.many_to_many and field.column is not None:
            return [f"drops column {old._meta.db_table}.{field.column}"]
    if isinstance(op, ops.AlterOrderWithRespectTo) and old is not None:
        if old._meta.order_with_respect_to and not op.order_with_respect_to:
            return [f"drops column {change.new._meta.db_table}._order"]
    return []


@rule("DROP_TABLE", squawk=("ban-drop-table",),
      fix="Deploy code that no longer uses the model first; drop the table in a later release.")
def drop_table(change: Change) -> list[str]:
    op, old = change.op, change.old
    if isinstance(op, ops.DeleteModel) and old is not None:
        return [f"drops table {old._meta.db_table}"]
    if isinstance(op, ops.RemoveField) and old is not None:
        field = old._meta.get_field(op.name)
        return [f"drops many-to-many table {field.m2m_db_table()}"] if field.many_to_many else []
    return []


@rule("RENAME_TABLE", squawk=("renaming-table",),
      fix="Keep the table name with Meta.db_table, or copy into a new table across releases.")
def rename_table(change: Change) -> list[str]:
    if not change.renames:
        return []
    old, new = change.tables_before, change.tables_after
    gone = sorted(set(old) - set(new) - change.created_tables)
    return [f"renames table {', '.join(gone)} to {', '.join(sorted(set(new) - set(old)))}"] if gone else []


@rule("RENAME_COLUMN", squawk=("renaming-column",),
      fix="Add a new column, backfill it, switch the code, then drop the old one (or keep the column name "
      "with db_column).")
def rename_column(change: Change) -> list[str]:
    if not change.renames:
        return []
    old, new, found = change.tables_before, change.tables_after, []
    for table in sorted(set(old) & set(new) - change.created_tables):
        lost, got = sorted(old[table] - new[table]), sorted(new[table] - old[table])
        if lost:
            found.append(f"renames column {table}.{', '.join(lost)} to {', '.join(got)}")
    return found


@rule("NOT_NULL", squawk=("adding-required-field", "ban-drop-default"), squawk_scans=("adding-not-nullable-field",),
      fix="Add the column as null=True or with db_default=…, backfill it, and make it NOT NULL in a later migration.")
def not_null(change: Change) -> list[str]:
    op, field = change.op, change.added
    if field is not None and not field.null and not db_default_fills(field) and not field.generated:
        return [f"adds NOT NULL column {_where(field)} without a db_default that fills it"]
    if change.altered and change.altered[0].null and not change.altered[1].null:
        return [f"makes {_where(change.altered[1])} NOT NULL"]
    if isinstance(op, ops.AlterOrderWithRespectTo) and change.old is not None:
        if op.order_with_respect_to and not change.old._meta.order_with_respect_to:
            return [f"adds NOT NULL column {change.new._meta.db_table}._order without db_default"]
    return []


# squawk's constraint-missing-not-valid too: a UNIQUE constraint cannot be NOT VALID.
@rule("ADD_UNIQUE", size_sensitive=True, squawk=("disallowed-unique-constraint", "constraint-missing-not-valid"),
      fix="Deduplicate first; on PostgreSQL build a unique index CONCURRENTLY and attach it.")
def add_unique(change: Change) -> list[str]:
    field, altered = change.added, change.altered
    if field is not None and field.unique and change.big(field.model):
        return [f"adds unique column {_where(field)} to a big table"]
    if altered and altered[1].unique and not altered[0].unique and change.big(altered[1].model):
        return [f"makes {_where(altered[1])} unique on a big table"]
    added = change.together_added(ops.AlterUniqueTogether)
    if added and change.big(change.new):
        return [f"adds unique_together {added} to big table {change.new._meta.db_table}"]
    constraint = change.constraint
    if isinstance(constraint, models.UniqueConstraint) and change.big(change.new):
        return [f"adds unique constraint {constraint.name} on a big table"]
    return []


@rule("INDEX_NOT_CONCURRENT", size_sensitive=True, squawk=("require-concurrent-index-creation",),
      linter=("CREATE_INDEX",),
      fix="Use django.contrib.postgres.operations.AddIndexConcurrently in a migration with atomic = False.")
def index_not_concurrent(change: Change) -> list[str]:
    from django.contrib.postgres.operations import AddIndexConcurrently

    op: Any = change.op
    field, altered = change.added, change.altered
    if not change.pg:
        return []
    if field is not None and (field.db_index or field.unique) and change.big(field.model):
        return [f"indexes new column {_where(field)} under lock"]
    if altered and (altered[1].db_index or altered[1].unique) and not (altered[0].db_index or altered[0].unique):
        return [f"indexes {_where(altered[1])} under lock"] if change.big(altered[1].model) else []
    added = change.together_added(ops.AlterIndexTogether)
    if added and change.big(change.new):
        return [f"adds index_together {added} to big table {change.new._meta.db_table} without CONCURRENTLY"]
    if isinstance(op, ops.AddIndex) and not isinstance(op, AddIndexConcurrently) and change.new is not None:
        return [f"builds index {op.index.name} without CONCURRENTLY"] if change.big(change.new) else []
    return []


@rule("CONSTRAINT_NOT_VALID", size_sensitive=True,
      squawk=("constraint-missing-not-valid", "adding-foreign-key-constraint"),
      fix="Use django.contrib.postgres.operations.AddConstraintNotValid, then ValidateConstraint in a later "
      "migration.")
def constraint_not_valid(change: Change) -> list[str]:
    from django.contrib.postgres.operations import AddConstraintNotValid

    op: Any = change.op
    field, altered = change.added, change.altered
    if not change.pg:
        return []
    if field is not None and _validated_fk(field) and change.big(field.model):
        return [f"adds a validated foreign key {_where(field)}"]
    if altered and _validated_fk(altered[1]) and change.big(altered[1].model):
        old, new = altered
        if not _validated_fk(old):
            return [f"adds a validated foreign key {_where(new)}"]
        editor: Any = change.connection.schema_editor(collect_sql=True)  # never entered: Django's own rule
        if editor._field_should_be_altered(old, new, ignore={"db_comment"}):
            return [f"re-creates the foreign key of {_where(new)}, validated under lock (Django drops and re-adds "
                    "it to alter the column); alter the column with RunSQL inside SeparateDatabaseAndState instead"]
    constraint = change.constraint
    if constraint is not None and not isinstance(op, AddConstraintNotValid):
        if not isinstance(constraint, models.UniqueConstraint) and change.big(change.new):
            return [f"adds constraint {constraint.name} validated under lock"]
    return []


@rule("COLUMN_TYPE_REWRITE", size_sensitive=True, squawk=("changing-column-type",), linter=("ALTER_COLUMN",),
      fix="Add a column of the new type, backfill it in batches, switch over, drop the old one.")
def column_type_rewrite(change: Change) -> list[str]:
    if not change.pg or not change.altered:
        return []
    old, new = change.altered
    old_type, new_type = old.db_type(change.connection), new.db_type(change.connection)
    if type_change_rewrites(old_type, new_type) and change.big(new.model):
        return [f"changes {_where(new)} from {old_type} to {new_type}: the table is rewritten under an "
                "exclusive lock"]
    return []


@rule("TABLE_REWRITE", size_sensitive=True, squawk=("adding-field-with-default",),
      fix="Add a plain nullable column and backfill it in batches, instead of a stored generated column on a big "
      "table.")
def table_rewrite(change: Change) -> list[str]:
    field = change.added
    if change.pg and field is not None and field.generated and field.db_persist and change.big(field.model):
        return [f"adds stored generated column {_where(field)}: the table is rewritten under an exclusive lock"]
    return []
