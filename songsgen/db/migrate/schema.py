"""Does the live database match the migration state? (`dbcheck --schema`, migrate's verification.)

The expected schema comes from `ProjectState`, never from importing an app's models.
"""

from __future__ import annotations

import fnmatch
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import truncate_name
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.operations.fields import RemoveField
from django.db.migrations.operations.models import DeleteModel, RemoveConstraint, RemoveIndex
from django.db.migrations.operations.special import SeparateDatabaseAndState
from django.db.migrations.state import ModelState, ProjectState

from songsgen.db.fields import column_of
from songsgen.db.problems import Problem


@dataclass
class TableSpec:
    """What one model's table should look like."""

    columns: dict[str, tuple[str, bool]] = field(default_factory=dict)  # column -> (type, nullable)
    named: set[str] = field(default_factory=set)  # Meta index and constraint names
    unique_columns: list[tuple[str, ...]] = field(default_factory=list)
    index_columns: list[tuple[str, ...]] = field(default_factory=list)
    # column -> (table, column)
    foreign_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    primary_key: str | None = None


def _normalize_type(db_type: str, vendor: str) -> str:
    text = re.sub(r"\s+", " ", db_type.strip().lower())
    text = re.sub(r"\s*,\s*", ",", text)
    if vendor == "postgresql":
        text = re.sub(r"^varchar\(", "character varying(", text)
        text = re.sub(r"^char\(", "character(", text)
        if text == "time":
            text = "time without time zone"
        if text == "timestamp":
            text = "timestamp without time zone"
    return text


def applied_state(executor: MigrationExecutor, keys: Iterable[tuple[str, str]] | None = None) -> ProjectState:
    """The project state of the migrations applied now (django_migrations as the loader read it).

    The migration graph's own state of its applied nodes and their dependencies, through the
    loader's public `project_state()`; a recorded migration whose file is gone is not part of the
    graph and is left out, as Django's executor does. `keys`: another set of applied migrations.
    """
    loader = executor.loader
    applied = [key for key in (loader.applied_migrations if keys is None else keys) if key in loader.graph.nodes]
    return loader.project_state(applied, at_end=True) if applied else ProjectState(real_apps=loader.unmigrated_apps)


@dataclass
class Forgotten:
    """What applied migrations removed from the state only, which the database may keep."""

    # (table, column) -> migration
    columns: dict[tuple[str, str], str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)  # table -> migration
    indexes: set[tuple[str, str]] = field(default_factory=set)  # (table, index or constraint name)


def _table_of(app_label: str, model: ModelState, connection: BaseDatabaseWrapper) -> str:
    explicit = model.options.get("db_table")
    return str(explicit) if explicit else truncate_name(f"{app_label}_{model.name_lower}",
                                                        connection.ops.max_name_length())


def _forget(op: Any, app_label: str, state: ProjectState, connection: BaseDatabaseWrapper, where: str,
            forgotten: Forgotten) -> None:
    """Record what one state-only operation takes out of the state (read before it is applied)."""
    model = state.models.get((app_label, getattr(op, "model_name_lower", None) or op.name_lower))
    if model is None:
        return
    table = _table_of(app_label, model, connection)
    if isinstance(op, DeleteModel):
        forgotten.tables[table] = where
    elif isinstance(op, RemoveField) and op.name in model.fields:
        removed = model.fields[op.name]
        attname = f"{op.name}_id" if isinstance(removed, models.ForeignKey) else op.name
        forgotten.columns[(table, removed.db_column or attname)] = where
    elif isinstance(op, RemoveIndex | RemoveConstraint):
        # RemoveConstraint.name: not in the stubs
        forgotten.indexes.add((table, str(op.name)))  # type: ignore[union-attr]


def forgotten_by_state_only(executor: MigrationExecutor, connection: BaseDatabaseWrapper) -> Forgotten:
    """Columns, tables, indexes applied migrations removed from the state only (state replayed)."""
    loader = executor.loader
    applied = set(loader.applied_migrations)
    order = [m for m, _ in executor.migration_plan(loader.graph.leaf_nodes(), clean_start=True)
             if (m.app_label, m.name) in applied]
    forgotten = Forgotten()
    if not any(isinstance(op, SeparateDatabaseAndState) for m in order for op in m.operations):
        return forgotten
    state = ProjectState(real_apps=loader.unmigrated_apps)
    for migration in order:
        for op in migration.operations:
            if isinstance(op, SeparateDatabaseAndState):
                for state_op in op.state_operations:
                    if isinstance(state_op, DeleteModel | RemoveField | RemoveIndex | RemoveConstraint):
                        _forget(state_op, migration.app_label, state, connection,
                                f"{migration.app_label}.{migration.name}", forgotten)
                    state_op.state_forwards(migration.app_label, state)
            else:
                op.state_forwards(migration.app_label, state)
    return forgotten


def expected_schema(state: ProjectState, connection: BaseDatabaseWrapper) -> dict[str, TableSpec]:
    """The tables the migration state says this database holds, keyed by table name."""
    tables: dict[str, TableSpec] = {}
    vendor = connection.vendor
    for model in state.apps.get_models(include_auto_created=True):
        meta = model._meta
        if not meta.managed or meta.proxy or not router.allow_migrate_model(connection.alias, model):
            continue
        spec = tables.setdefault(meta.db_table, TableSpec())
        for f in meta.local_fields:
            db_type = f.db_type(connection)
            if db_type is None or not f.column:
                continue
            spec.columns[f.column] = (_normalize_type(db_type, vendor), bool(f.null) and not f.primary_key)
            if f.primary_key:
                spec.primary_key = f.column
            elif f.unique:
                spec.unique_columns.append((f.column,))
            # db_index is set in Field.__init__, missing from django-stubs
            elif f.db_index:  # type: ignore[attr-defined]
                spec.index_columns.append((f.column,))
            # not in django-stubs
            if isinstance(f, models.ForeignKey) and getattr(f, "db_constraint", False):
                target = f.target_field
                spec.foreign_keys[f.column] = (target.model._meta.db_table, target.column)
        for fields in meta.unique_together:
            spec.unique_columns.append(tuple(column_of(model, name) for name in fields))
        spec.named.update(index.name for index in meta.indexes)
        spec.named.update(constraint.name for constraint in meta.constraints)
    return tables


def live_columns(connection: BaseDatabaseWrapper, table: str) -> dict[str, tuple[str, bool]]:
    """Columns of a live table: name -> (declared type, nullable)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA table_xinfo({connection.ops.quote_name(table)})")
            return {
                name: (_normalize_type(type_ or "", "sqlite"), not notnull and not pk)
                for _cid, name, type_, notnull, _default, pk, hidden in cursor.fetchall()
                if not hidden
            }
        cursor.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
            FROM pg_attribute a
            WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
            """,
            [connection.ops.quote_name(table)],
        )
        return {name: (_normalize_type(type_, "postgresql"), nullable) for name, type_, nullable in cursor.fetchall()}


def _kept(what: str, where: str) -> str:
    return (f"{what} is kept in the database but was removed from the migration state only ({where}); drop it in "
            "a later migration once no running code uses it")


def compare_schema(
    expected: dict[str, TableSpec], connection: BaseDatabaseWrapper, forgotten: Forgotten | None = None
) -> list[Problem]:
    """Every difference between expected tables and the live database (`forgotten`: state-only)."""
    forgotten = forgotten or Forgotten()
    problems: list[Problem] = []
    with connection.cursor() as cursor:
        live_tables = set(connection.introspection.table_names(cursor))
    for table, spec in sorted(expected.items()):
        if table not in live_tables:
            problems.append(Problem("schema", table, "table is missing"))
            continue
        columns = live_columns(connection, table)
        for column, (db_type, nullable) in spec.columns.items():
            if column not in columns:
                problems.append(Problem("schema", table, f"column {column} is missing"))
                continue
            live_type, live_nullable = columns[column]
            if live_type != db_type:
                problems.append(Problem("schema", table, f"column {column} is {live_type}, expected {db_type}"))
            if live_nullable != nullable:
                want = "NULL" if nullable else "NOT NULL"
                problems.append(Problem("schema", table, f"column {column} should be {want}"))
        kept: set[str] = set()
        for column in sorted(set(columns) - set(spec.columns)):
            if (table, column) in forgotten.columns:
                kept.add(column)
                problems.append(Problem("schema", table, _kept(f"column {column}", forgotten.columns[(table, column)]),
                                        blocking=False))
            else:
                problems.append(Problem("schema", table, f"column {column} is not in the migration state"))
        problems.extend(_compare_constraints(connection, table, spec, kept, forgotten))
    known = ["django_migrations", "sqlite_*", *getattr(settings, "SCHEMA_KNOWN_EXTRA_TABLES", [])]
    for table in sorted(live_tables - set(expected)):
        if any(fnmatch.fnmatchcase(table, pattern) for pattern in known):
            continue
        detail = _kept("table", forgotten.tables[table]) if table in forgotten.tables else \
            "table is not in the migration state"
        problems.append(Problem("schema", table, detail, blocking=False))
    return problems


def _compare_constraints(
    connection: BaseDatabaseWrapper, table: str, spec: TableSpec, kept: set[str], forgotten: Forgotten
) -> list[Problem]:
    """Named, unique, index, foreign-key constraints; `kept`: columns removed from the state only.

    Each expected field-level index or unique constraint is matched to its own live index,
    never to one a Meta entry names (a partial unique constraint on the same column is not the
    foreign key's index)."""
    problems: list[Problem] = []
    with connection.cursor() as cursor:
        live: dict[str, dict[str, Any]] = connection.introspection.get_constraints(cursor, table)
    matched: set[str] = set()
    for name in sorted(spec.named):
        if name in live:
            matched.add(name)
        else:
            problems.append(Problem("schema", table, f"index or constraint {name} is missing"))

    def find(columns: tuple[str, ...], **flags: Any) -> str | None:
        for name, info in live.items():
            if name in matched or name in spec.named:
                continue
            if tuple(info.get("columns") or ()) == columns and all(info.get(k) == v for k, v in flags.items()):
                return name
        return None

    if spec.primary_key and not find((spec.primary_key,), primary_key=True):
        problems.append(Problem("schema", table, f"primary key on {spec.primary_key} is missing"))
    for columns in spec.unique_columns:
        found = find(columns, unique=True)
        if found is None:
            problems.append(Problem("schema", table, f"unique constraint on {', '.join(columns)} is missing"))
        else:
            matched.add(found)
    for columns in spec.index_columns:
        found = find(columns, index=True, unique=False) or find(columns, index=True) or find(columns, unique=True)
        if found is None:
            problems.append(Problem("schema", table, f"index on {', '.join(columns)} is missing"))
        else:
            matched.add(found)
    for column, target in spec.foreign_keys.items():
        found = next((name for name, info in live.items() if tuple(info.get("columns") or ()) == (column,)
                      and info.get("foreign_key") == target), None)
        if found is None:
            problems.append(Problem("schema", table, f"foreign key {column} -> {target[0]}.{target[1]} missing"))
        else:
            matched.add(found)
    for name, info in sorted(live.items()):
        if name in matched or info.get("primary_key") or info.get("foreign_key"):
            continue
        if name.startswith("sqlite_autoindex") or name.endswith("_like"):
            # SQLite's own index for a UNIQUE column; PostgreSQL's varchar_pattern_ops twin
            continue
        if (table, name) in forgotten.indexes or kept & set(info.get("columns") or ()):
            # removed from the state only, or on a column that was: expected while the column stays
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in getattr(settings, "SCHEMA_KNOWN_EXTRA_INDEXES", [])):
            continue
        if info.get("index") or info.get("unique"):
            problems.append(Problem("schema", table, f"index {name} is not in the migration state", blocking=False))
    return problems


def integrity_problems(
    connection: BaseDatabaseWrapper, *, quick: bool = False, tables: Iterable[str] | None = None,
    pages: bool = True, keys: bool = True,
) -> list[Problem]:
    """SQLite: integrity (`pages`) and foreign-key (`keys`) checks, of `tables` only when given.
    PostgreSQL: constraints never validated."""
    problems: list[Problem] = []
    if connection.vendor == "sqlite":
        pragma = "quick_check" if quick else "integrity_check"
        qn = connection.ops.quote_name
        # integrity_check(T) checks one table and its indexes: after a migration that touched two
        # tables of a 2 GB database it takes milliseconds instead of seconds.
        scopes = [""] if tables is None else [f"({qn(t)})" for t in sorted(tables)]
        try:
            with connection.cursor() as cursor:
                for scope in scopes:
                    if pages:
                        cursor.execute(f"PRAGMA {pragma}{scope}")
                        rows = [row[0] for row in cursor.fetchall()]
                        if rows != ["ok"]:
                            for row in rows[:20]:
                                problems.append(Problem("integrity", "database", str(row)))
                    if not keys:
                        continue
                    cursor.execute(f"PRAGMA foreign_key_check{scope}")
                    for table, rowid, parent, _fk in cursor.fetchall()[:100]:
                        problems.append(
                            Problem("foreign_keys", table, f"row {rowid} points at a missing {parent} row")
                        )
        except (sqlite3.DatabaseError, Exception) as exc:
            # a malformed file raises instead of reporting
            if isinstance(exc, sqlite3.DatabaseError) or "malformed" in str(exc) or "not a database" in str(exc):
                problems.append(Problem("integrity", "database", f"{type(exc).__name__}: {exc}"))
            else:
                raise
        return problems
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint "
            "WHERE NOT convalidated AND connamespace = 'public'::regnamespace"
        )
        for table, name in cursor.fetchall():
            problems.append(Problem("constraints", table, f"constraint {name} is NOT VALID (never validated)"))
    return problems


def orphan_problems(connection: BaseDatabaseWrapper, expected: dict[str, TableSpec]) -> list[Problem]:
    """Rows whose foreign key points at nothing (PostgreSQL; SQLite's foreign_key_check does it)."""
    problems: list[Problem] = []
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table, spec in sorted(expected.items()):
            for column, (parent, parent_column) in sorted(spec.foreign_keys.items()):
                cursor.execute(
                    f"SELECT COUNT(*) FROM {qn(table)} c WHERE c.{qn(column)} IS NOT NULL AND NOT EXISTS "
                    f"(SELECT 1 FROM {qn(parent)} p WHERE p.{qn(parent_column)} = c.{qn(column)})"
                )
                count = cursor.fetchone()[0]
                if count:
                    problems.append(
                        Problem("foreign_keys", table, f"{count} rows with {column} pointing at no {parent} row")
                    )
    return problems
