"""The safe migrate's verification: live schema equals the migration state, integrity holds.

Shared by the live migrate and the rehearsal's process; the tables a plan changes
bound the row checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.migration import Migration
from django.db.migrations.operations.fields import FieldOperation
from django.db.migrations.operations.models import IndexOperation, ModelOperation
from django.db.migrations.state import ProjectState

from songsgen.db.migrate import schema
from songsgen.db.migrate.apply import Applier
from songsgen.db.migrate.schema import applied_state
from songsgen.db.problems import Problem

Plan = list[tuple[Migration, bool]]

def touched_tables(plan: Plan, state: ProjectState) -> set[str] | None:
    """The tables the plan's operations change; None when one may change any (RunSQL, RunPython)."""
    tables: set[str] = set()
    for migration, _backwards in plan:
        for op in migration.operations:
            if not isinstance(op, ModelOperation | FieldOperation | IndexOperation):
                return None  # RunSQL, RunPython, SeparateDatabaseAndState, custom operations
            name = getattr(op, "model_name", None) or getattr(op, "name", None)
            try:
                tables.add(state.apps.get_model(migration.app_label, name)._meta.db_table)
            except LookupError:
                continue  # the model is gone (DeleteModel): nothing left to check
    return tables


def part(plan: Plan, labels: list[str]) -> Plan:
    """The migrations of the plan named by `labels` ("app.name")."""
    return [(m, b) for m, b in plan if f"{m.app_label}.{m.name}" in labels]


def tables_changed_by(plan: Plan, state: ProjectState) -> Callable[[list[str]], set[str] | None]:
    """For the applier: the tables the named migrations of the plan change (None: any)."""
    return lambda labels: touched_tables(part(plan, labels), state)


def in_transaction(plan: Plan, applier: Applier) -> Plan:
    """The part of the plan the applier's open transaction holds; the whole plan if none is."""
    return part(plan, applier.grouped) if applier.in_transaction else plan


def after_commit_problems(connection: BaseDatabaseWrapper, plan: Plan, checked: set[str] | None
                          ) -> list[Problem]:
    """SQLite's checks that need no lock, after the commit: the pages of the tables the
    plan changed, and the foreign keys of those the transaction's own check (`checked`;
    None: all) left out."""
    tables = touched_tables(plan, applied_state(MigrationExecutor(connection)))
    problems = page_problems(connection, tables)
    rest = set() if checked is None else None if tables is None else tables - checked
    if rest is None or rest:
        quick = getattr(settings, "MIGRATE_VERIFY_INTEGRITY", "full") == "quick"
        problems += schema.integrity_problems(connection, quick=quick, tables=rest, pages=False, keys=True)
    return problems


def verify(
    connection: BaseDatabaseWrapper, plan: Plan | None = None, *, structure: bool = True, pages: bool = True
) -> tuple[list[Problem], set[str] | None]:
    """The live schema equals the state of the applied migrations; integrity and foreign keys hold.

    `structure`: the schema, compared in full, and the foreign keys; `pages`:
    SQLite's integrity_check, read-only, so the safe path runs it after the commit,
    outside the write lock. The row checks cover the tables the plan changed when
    that is known (`touched_tables`), else the whole database; returns the problems
    and those tables (None: all)."""
    # A fresh executor reads django_migrations as it is now (inside our transaction).
    executor = MigrationExecutor(connection)
    state = applied_state(executor)
    tables = touched_tables(plan, state) if plan is not None else None
    problems: list[Problem] = []
    if structure:
        forgotten = schema.forgotten_by_state_only(executor, connection)
        problems += schema.compare_schema(schema.expected_schema(state, connection), connection, forgotten)
    quick = getattr(settings, "MIGRATE_VERIFY_INTEGRITY", "full") == "quick"
    problems += schema.integrity_problems(connection, quick=quick, tables=tables, pages=pages, keys=structure)
    if connection.vendor == "postgresql":
        # NOT VALID is how a big-table constraint is added safely; report it, do not fail on it.
        problems = [
            replace(p, blocking=False) if p.code == "constraints" else p
            for p in problems
        ]
    return problems, tables


def page_problems(connection: BaseDatabaseWrapper, tables: set[str] | None) -> list[Problem]:
    """SQLite's page integrity check of `tables` (None: all): read-only, so after the commit."""
    quick = getattr(settings, "MIGRATE_VERIFY_INTEGRITY", "full") == "quick"
    return schema.integrity_problems(connection, quick=quick, tables=tables, pages=True, keys=False)
