"""A non-atomic migration's operations one by one: tracked, reversed on failure, skipped on rerun.

Django records such a migration only at its end; this knows which operations completed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration
from django.db.migrations.operations import (
    AddField,
    CreateModel,
    DeleteModel,
    RemoveField,
    RunPython,
    RunSQL,
    SeparateDatabaseAndState,
)
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

from songsgen.db.exceptions import UndoFailed
from songsgen.db.migrate import schema

Key = tuple[str, str]


@dataclass
class Progress:
    """How far one migration's operations got, in running order (`backwards`: being unapplied)."""

    migration: str  # "app.name"
    backwards: bool = False
    done: int = 0  # operations completed (or found done), counted in the order they run
    running: int | None = None  # index in `operations` of the one under way
    failed: bool = False  # the one under way raised (it did not die with the process)

    @property
    def key(self) -> Key:
        app, name = self.migration.split(".", 1)
        return app, name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Progress | None:
        """As the crash marker or the stopped record keeps it."""
        if not data:
            return None
        return cls(str(data["migration"]), bool(data.get("backwards")), int(data.get("done", 0)),
                   None if data.get("running") is None else int(data["running"]), bool(data.get("failed")))

    @property
    def started(self) -> bool:
        return self.done > 0 or self.running is not None


def describe(migration: str, op: Operation) -> str:
    """An operation as the operator reads it in a report: what it does, and in which migration."""
    return f"{op.describe()} ({migration})"


def order(migration: Migration, backwards: bool) -> list[int]:
    """The indexes of the migration's operations in the order they run."""
    indexes = list(range(len(migration.operations)))
    return indexes[::-1] if backwards else indexes


class Tracker:
    """Hooks the database work of each operation of one running migration: counts it,
    or skips it when an earlier run left it applied (`skip` operations) and the live
    schema shows it done."""

    def __init__(self, connection: BaseDatabaseWrapper, migration: Migration, progress: Progress, skip: int,
                 on_change: Callable[[Progress], None] | None, log: Callable[[str], None] | None = None) -> None:
        self.connection, self.migration, self.progress, self.skip = connection, migration, progress, skip
        self.on_change, self.log = on_change, log
        self.method = "database_backwards" if progress.backwards else "database_forwards"
        positions = order(migration, progress.backwards)
        for position, index in enumerate(positions):
            op = migration.operations[index]
            setattr(op, self.method, self._hook(op, index, position, getattr(op, self.method)))

    def _hook(self, op: Operation, index: int, position: int, run: Callable[..., None]) -> Callable[..., None]:
        def hooked(app_label: str, schema_editor: Any, from_state: ProjectState, to_state: ProjectState) -> None:
            # Django passes the state it runs from and the one it runs to, whichever the direction.
            if position < self.skip and already_done(self.connection, from_state, to_state):
                if self.log is not None:
                    self.log(f"  already done, skipped: {describe(self.progress.migration, op)}")
            else:
                self._changed(running=index)
                try:
                    with self._checked_drop(op, from_state, to_state):
                        run(app_label, schema_editor, from_state, to_state)
                except BaseException:
                    self.progress.failed = True
                    raise
            self._changed(done=position + 1)

        return hooked

    def _checked_drop(self, op: Operation, before: ProjectState, after: ProjectState) -> Any:
        """A drop in a non-atomic migration commits alone, after the foreign keys pointing at it
        are checked: SQLite's own check comes only after the whole migration, when the rows
        would be gone for good."""
        if not drops_kind(op, self.progress.backwards) or self.connection.in_atomic_block:
            return nullcontext()
        return _verified_drop(self.connection, changed_tables(before, after, self.connection))

    def _changed(self, *, running: int | None = None, done: int | None = None) -> None:
        self.progress.running, self.progress.failed = running, False
        if done is not None:
            self.progress.done = done
        if self.on_change is not None:
            self.on_change(self.progress)

    def remove(self) -> None:
        for op in self.migration.operations:
            op.__dict__.pop(self.method, None)


@contextmanager
def _verified_drop(connection: BaseDatabaseWrapper, tables: set[str]) -> Iterator[None]:
    """One transaction around a drop; on SQLite, rolled back unless keys into `tables` hold."""
    with transaction.atomic(using=connection.alias):
        yield
        # PostgreSQL's constraints refuse (or CASCADE) at the statement
        if connection.vendor == "sqlite":
            connection.check_constraints(table_names=_referencing(connection, tables))


def _referencing(connection: BaseDatabaseWrapper, tables: set[str]) -> list[str]:
    """SQLite: `tables` and every table with a foreign key pointing at one of them."""
    with connection.cursor() as cursor:
        names = connection.introspection.table_names(cursor)
        found = set(tables) & set(names)
        for name in names:
            cursor.execute(f"PRAGMA foreign_key_list({connection.ops.quote_name(name)})")
            if any(row[2] in tables for row in cursor.fetchall()):
                found.add(name)
    return sorted(found)


# --- what an operation did to the schema
# -----------------------------------------------------------------
def changed_tables(before: ProjectState, after: ProjectState, connection: BaseDatabaseWrapper) -> set[str]:
    """The tables whose expected shape differs between two states (empty: no schema change)."""
    a, b = schema.expected_schema(before, connection), schema.expected_schema(after, connection)
    return {t for t in a.keys() | b.keys() if a.get(t) != b.get(t)}


def matches(connection: BaseDatabaseWrapper, state: ProjectState, tables: set[str]) -> bool:
    """The live `tables` are as `state` says (present with every column and constraint, or not)."""
    expected = {t: spec for t, spec in schema.expected_schema(state, connection).items() if t in tables}
    with connection.cursor() as cursor:
        live = set(connection.introspection.table_names(cursor))
    if (tables - set(expected)) & live:
        return False
    return not [p for p in schema.compare_schema(expected, connection) if p.blocking and p.subject in tables]


def already_done(connection: BaseDatabaseWrapper, before: ProjectState, after: ProjectState) -> bool:
    """An operation an earlier run left applied: done when the live schema shows its result, not
    done when it shows the state before it; anything else is no state the migrations know, and
    stops the run."""
    tables = changed_tables(before, after, connection)
    if not tables or matches(connection, after, tables):
        return True  # no schema of its own (RunPython, RunSQL): the record says it completed
    if matches(connection, before, tables):
        return False
    raise UndoFailed(
        f"the live table(s) {', '.join(sorted(tables))} match neither the state before nor after an operation a "
        "failed migrate left applied; compare them with `manage.py dbcheck --schema`"
    )


# --- which operations drop data
# ---------------------------------------------------------------------------
def _database_ops(op: Operation) -> Iterator[Operation]:
    """What an operation does to the database: a SeparateDatabaseAndState's database side only."""
    if isinstance(op, SeparateDatabaseAndState):
        for inner in op.database_operations:
            yield from _database_ops(inner)
    else:
        yield op


def drops_kind(op: Operation, backwards: bool) -> list[Operation]:
    """The parts of `op` that, run that way, drop a table or a column."""
    dropping = (CreateModel, AddField) if backwards else (DeleteModel, RemoveField)
    return [inner for inner in _database_ops(op) if isinstance(inner, dropping)]


def drops(app_label: str, op: Operation, backwards: bool, before: ProjectState) -> list[str]:
    """What running `op` (in that direction) dropped that existed before the run
    (`before`): its rows cannot be brought back by a reverse operation, which would
    re-create the table or column empty."""
    lost: list[str] = []
    for inner in drops_kind(op, backwards):
        model_name = getattr(inner, "model_name", None) or getattr(inner, "name", "")
        key = (app_label, str(model_name).lower())
        if key not in before.models:
            continue
        if isinstance(inner, CreateModel | DeleteModel):
            lost.append(f"table {before.apps.get_model(*key)._meta.db_table}")
        elif isinstance(inner, AddField | RemoveField):
            if inner.name in before.models[key].fields:
                model = before.apps.get_model(*key)
                column = model._meta.get_field(inner.name).column or inner.name
                lost.append(f"column {column} of table {model._meta.db_table}")
    return lost


def migration_drops(migration: Migration, backwards: bool, before: ProjectState) -> list[str]:
    """What undoing a whole recorded migration could not bring back (see `drops`)."""
    return [d for op in migration.operations for d in drops(migration.app_label, op, backwards, before)]


def wrote_outside_a_transaction(op: Operation) -> bool:
    """Code (RunPython, RunSQL) that, in a non-atomic migration, commits as it goes."""
    return isinstance(op, RunPython | RunSQL) and not op.atomic


# --- reversing
# ---------------------------------------------------------------------------------------------
@dataclass
class Reversal:
    reversed: list[str] = field(default_factory=list)  # operations reversed, in the order they were
    stays: list[str] = field(default_factory=list)  # operations left applied, with why
    dropped: list[str] = field(default_factory=list)  # what an operation that stays dropped
    # how far the migration's operations stay applied (None: nothing stays)
    left: Progress | None = None
    # code that was running outside a transaction: what it wrote is not undone
    unfinished: str | None = None


def states(loader_state: ProjectState, migration: Migration) -> list[ProjectState]:
    """The project state before each operation of the migration, and after its last."""
    result = [loader_state]
    for op in migration.operations:
        nxt = result[-1].clone()
        op.state_forwards(migration.app_label, nxt)
        result.append(nxt)
    return result


def reverse(connection: BaseDatabaseWrapper, progress: Progress, before: ProjectState,
            log: Callable[[str], None], on_change: Callable[[Progress], None] | None = None) -> Reversal:
    """Undo, last first, the operations of a migration that stopped half-way, with their
    own reverse operations; stop before one that is irreversible or whose reverse cannot
    bring its data back."""
    from songsgen.db.migrate.online.plan import undo_atomic

    executor = MigrationExecutor(connection)
    loader = executor.loader
    migration = loader.graph.nodes[progress.key]
    start = schema.applied_state(executor, [k for k in loader.applied_migrations if k != progress.key])
    at = states(start, migration)
    positions = order(migration, progress.backwards)
    done = progress.done
    result = Reversal()
    if progress.running is not None and wrote_outside_a_transaction(migration.operations[progress.running]):
        result.unfinished = describe(progress.migration, migration.operations[progress.running])
    if progress.running is not None and not progress.failed and done < len(positions) \
            and positions[done] == progress.running:  # the process died during it: did it complete?
        op = migration.operations[progress.running]
        before_op, after_op = at[progress.running], at[progress.running + 1]
        if progress.backwards:
            before_op, after_op = after_op, before_op
        tables = changed_tables(before_op, after_op, connection)
        if tables and matches(connection, after_op, tables):
            done += 1  # it completed just before the process died, unrecorded
        elif tables and not matches(connection, before_op, tables):
            result.stays.append(f"{describe(progress.migration, op)}: stopped half-way, cannot be reversed")
    app = migration.app_label
    while done > 0 and not result.stays:
        index = positions[done - 1]
        op = migration.operations[index]
        lost = drops(app, op, progress.backwards, before)
        if (not op.reversible and not progress.backwards) or lost:
            why = "its reverse cannot bring back the data it dropped" if lost else "it has no reverse operation"
            result.stays.append(f"{describe(progress.migration, op)}: {why}")
            result.dropped += lost
            done -= 1
            break
        whole = undo_atomic(connection, migration, start)
        with connection.schema_editor(atomic=whole) as editor:
            atomic = op.atomic or (whole and op.atomic is not False)
            with transaction.atomic(connection.alias) if atomic and not editor.atomic_migration else nullcontext():
                if progress.backwards:
                    op.database_forwards(app, editor, at[index], at[index + 1])
                else:
                    op.database_backwards(app, editor, at[index + 1], at[index])
        done -= 1
        result.reversed.append(describe(progress.migration, op))
        log(f"  reversed: {describe(progress.migration, op)}")
        if on_change is not None:
            on_change(Progress(progress.migration, progress.backwards, done))
    if result.stays:
        result.stays += [f"{describe(progress.migration, migration.operations[i])}: applied before it"
                         for i in reversed(positions[:done])]
        result.left = Progress(progress.migration, progress.backwards, done + 1)
    return result
