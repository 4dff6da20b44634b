"""Does the live database match what the migrations say it should be? (`dbcheck --schema`, migrate's verify.)

The expected schema comes from the migration state (`ProjectState`), never from importing an app's models:
every managed model's table, its columns with their database type and nullability, its named indexes and
constraints, field-level unique/index/foreign-key constraints and the primary key. The live schema comes
from the database's own catalogue. Missing or mismatched things are errors; extra tables and indexes the
state does not know (a text-search table made by RunSQL, say) are warnings, extra columns are errors.
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
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.state import ProjectState

from songsgen.db.fields import column_of
from songsgen.db.problems import Problem


@dataclass
class TableSpec:
    """What one model's table should look like."""

    columns: dict[str, tuple[str, bool]] = field(default_factory=dict)  # column -> (type, nullable)
    named: set[str] = field(default_factory=set)  # Meta index and constraint names
    unique_columns: list[tuple[str, ...]] = field(default_factory=list)
    index_columns: list[tuple[str, ...]] = field(default_factory=list)
    foreign_keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (table, column)
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


def applied_state(executor: MigrationExecutor) -> ProjectState:
    """The project state of the migrations applied now (django_migrations as the executor's loader read it).

    The migration graph's own state of its applied nodes and their dependencies, through the loader's
    public `project_state()`; a recorded migration whose file is gone is not part of the graph and
    is left out, as Django's executor does.
    """
    loader = executor.loader
    applied = [key for key in loader.applied_migrations if key in loader.graph.nodes]
    return loader.project_state(applied, at_end=True) if applied else ProjectState(real_apps=loader.unmigrated_apps)


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
            elif f.db_index:  # type: ignore[attr-defined]  # set in Field.__init__, missing from django-stubs
                spec.index_columns.append((f.column,))
            if isinstance(f, models.ForeignKey) and getattr(f, "db_constraint", False):  # not in django-stubs
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


def compare_schema(expected: dict[str, TableSpec], connection: BaseDatabaseWrapper) -> list[Problem]:
    """Every difference between the expected tables and the live database."""
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
        for column in sorted(set(columns) - set(spec.columns)):
            problems.append(Problem("schema", table, f"column {column} is not in the migration state"))
        problems.extend(_compare_constraints(connection, table, spec))
    known = ["django_migrations", "sqlite_*", *getattr(settings, "SCHEMA_KNOWN_EXTRA_TABLES", [])]
    for table in sorted(live_tables - set(expected)):
        if any(fnmatch.fnmatchcase(table, pattern) for pattern in known):
            continue
        problems.append(Problem("schema", table, "table is not in the migration state", blocking=False))
    return problems


def _compare_constraints(connection: BaseDatabaseWrapper, table: str, spec: TableSpec) -> list[Problem]:
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
        found = find(columns, index=True) or find(columns, unique=True)
        if found is None:
            problems.append(Problem("schema", table, f"index on {', '.join(columns)} is missing"))
        else:
            matched.add(found)
    for column, target in spec.foreign_keys.items():
        found = find((column,), foreign_key=target)
        if found is None:
            problems.append(Problem("schema", table, f"foreign key {column} -> {target[0]}.{target[1]} missing"))
        else:
            matched.add(found)
    for name, info in sorted(live.items()):
        if name in matched or info.get("primary_key") or info.get("foreign_key"):
            continue
        if name.startswith("sqlite_autoindex") or name.endswith("_like"):
            continue  # SQLite's own index for a UNIQUE column; PostgreSQL's varchar_pattern_ops twin
        if info.get("index") or info.get("unique"):
            problems.append(Problem("schema", table, f"index {name} is not in the migration state", blocking=False))
    return problems


def integrity_problems(
    connection: BaseDatabaseWrapper, *, quick: bool = False, tables: Iterable[str] | None = None,
    pages: bool = True, keys: bool = True,
) -> list[Problem]:
    """SQLite: integrity (`pages`) and foreign-key (`keys`) checks, of `tables` only when given. PostgreSQL:
    constraints never validated."""
    problems: list[Problem] = []
    if connection.vendor == "sqlite":
        pragma = "quick_check" if quick else "integrity_check"
        qn = connection.ops.quote_name
        # integrity_check(T) checks one table and its indexes: after a migration that touched two tables
        # of a 2 GB database it takes milliseconds instead of seconds.
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
        except (sqlite3.DatabaseError, Exception) as exc:  # a malformed file raises instead of reporting
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
    """Rows whose foreign key points at nothing (PostgreSQL; SQLite's foreign_key_check covers it)."""
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
