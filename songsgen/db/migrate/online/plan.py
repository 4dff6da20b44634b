"""Which migrations of a plan run online: on SQLite those whose operations rebuild or index a big table, on
PostgreSQL those whose statements on a big table have a safe form (`songsgen.db.migrate.safeddl`).

Both commit as they go (a chunk, CREATE INDEX CONCURRENTLY, VALIDATE), so the migration cannot share a
transaction: the applier runs it operation by operation, as a non-atomic migration (an earlier failure
is undone by reverse operations). A migration that also runs code (RunPython, RunSQL) keeps its
transaction and Django's statements: its code may count on running atomically."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations import operations as ops
from django.db.migrations.migration import Migration
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

from songsgen.db.rowcounts import table_rows_at_least

# What SQLite's schema editor does by rebuilding the table (or, for indexes, by a long build).
REBUILDS = (ops.AddField, ops.RemoveField, ops.AlterField, ops.AddIndex, ops.AddConstraint, ops.RemoveConstraint,
            ops.AlterUniqueTogether, ops.AlterIndexTogether, ops.AlterOrderWithRespectTo)
# PostgreSQL: what writes an index, a constraint or NOT NULL on an existing table.
SAFE_FORMS = (ops.AddField, ops.AlterField, ops.AddIndex, ops.RemoveIndex, ops.AddConstraint,
              ops.AlterUniqueTogether, ops.AlterIndexTogether)
CODE = (ops.RunPython, ops.RunSQL)


def _database_ops(op: Operation) -> Iterator[Operation]:
    if isinstance(op, ops.SeparateDatabaseAndState):
        for inner in op.database_operations:
            yield from _database_ops(inner)
    else:
        yield op


def big_tables(connection: BaseDatabaseWrapper, migration: Migration, state: ProjectState, min_rows: int
               ) -> list[str]:
    """The tables of at least `min_rows` rows that `migration`'s operations rebuild or index."""
    tables: list[str] = []
    kinds = REBUILDS if connection.vendor == "sqlite" else SAFE_FORMS
    for op in (inner for outer in migration.operations for inner in _database_ops(outer)):
        if not isinstance(op, kinds):
            continue
        try:
            model = getattr(op, "model_name_lower", None) or getattr(op, "name_lower", "")
            table = state.apps.get_model(migration.app_label, model)._meta.db_table
        except LookupError:  # created earlier in the plan: empty
            continue
        if table not in tables and table_rows_at_least(connection, table, min_rows):
            tables.append(table)
    return tables


def goes_online(connection: BaseDatabaseWrapper, migration: Migration, state: ProjectState) -> bool:
    """Whether `migration` (either way) runs online: an undo by reverse operations takes the same path."""
    from songsgen.db.migrate.online.editor import OnlineSchemaEditor
    from songsgen.db.migrate.safeddl.editor import SafeSchemaEditor

    return (issubclass(connection.SchemaEditorClass, OnlineSchemaEditor | SafeSchemaEditor)
            and not runs_code(migration) and bool(big_tables(connection, migration, state, threshold(connection))))


def undo_atomic(connection: BaseDatabaseWrapper, migration: Migration, state: ProjectState) -> bool:
    """Whether an undo of `migration` runs in one transaction: not when it went online (it runs as it was applied)."""
    return migration.atomic and not goes_online(connection, migration, state)


def runs_code(migration: Migration) -> bool:
    return any(isinstance(inner, CODE) for op in migration.operations for inner in _database_ops(op))


def online_migrations(connection: BaseDatabaseWrapper, plan: list[tuple[Migration, bool]], state: ProjectState,
                      min_rows: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """({migration label: big tables it changes online}, {label: big tables changed in its transaction
    because it also runs code}); nothing when the connection's schema editor is not ours."""
    from songsgen.db.migrate.online.editor import OnlineSchemaEditor
    from songsgen.db.migrate.safeddl.editor import SafeSchemaEditor

    online: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    if not issubclass(connection.SchemaEditorClass, OnlineSchemaEditor | SafeSchemaEditor):
        return online, held
    for migration, _backwards in plan:
        tables = big_tables(connection, migration, state, min_rows)
        if tables:
            (held if runs_code(migration) else online)[f"{migration.app_label}.{migration.name}"] = tables
    return online, held


def plan_online(connection: BaseDatabaseWrapper, plan: list[tuple[Migration, bool]], state: ProjectState,
                log: Callable[[str], None], warn: Callable[[str], None]) -> dict[str, list[str]]:
    """The online migrations of a plan, each said; a warning for those that cannot go online."""
    limit = threshold(connection)
    online, held = online_migrations(connection, plan, state, limit)
    how = ("rebuilds {} online (≥ {:,} rows): chunked copy, short cut-over" if connection.vendor == "sqlite" else
           "changes {} with safe DDL (≥ {:,} rows): CONCURRENTLY, NOT VALID + VALIDATE, operation by operation")
    for label, tables in online.items():
        log(f"  {label} " + how.format(", ".join(tables), limit))
    for label, tables in held.items():
        warn(f"{label} changes {', '.join(tables)} in one transaction, holding its locks throughout: it also runs "
             "code (RunPython/RunSQL). Move the code to a migration of its own to change the table online.")
    return online


def threshold(connection: BaseDatabaseWrapper) -> int:
    """Rows from which a table's change goes online: SQLite's rebuild setting, PostgreSQL's big table."""
    from django.conf import settings

    from songsgen.db.migrate.online.editor import min_rows

    return min_rows() if connection.vendor == "sqlite" else int(settings.MIGRATE_BIG_TABLE_ROWS)
