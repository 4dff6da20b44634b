"""`dbcheck`: the registry of checks, the report, and the checks every product shares (plans, sizes).

A check is one function registered under its flag's name with `@register`; each product's `checks`
module registers its own, so this module imports no product.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from songsgen.db.problems import Problem
from songsgen.db.replicas.router import read_connection
from songsgen.db.rowcounts import table_rows_at_least

ALWAYS = ""  # the name of a check that runs whichever checks are chosen


@dataclass
class HealthReport:
    database: str
    vendor: str
    problems: list[Problem] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)
    sizes: dict[str, int | float] = field(default_factory=dict)
    stopped: bool = False  # a check found what makes every later answer unreliable
    shared: dict[str, Any] = field(default_factory=dict, repr=False)  # what one check computed for another

    @property
    def ok(self) -> bool:
        return not any(p.blocking for p in self.problems)

    def as_json(self) -> str:
        return json.dumps({
            "database": self.database, "vendor": self.vendor, "ok": self.ok,
            "problems": [p.as_dict() for p in self.problems], "plans": self.plans, "sizes": self.sizes,
        }, indent=2)


CheckFunction = Callable[[BaseDatabaseWrapper, HealthReport], None]


@dataclass(frozen=True)
class Check:
    name: str
    step: int  # checks run in step order
    listed: int  # flags are listed (and named in "OK: …") in this order
    function: CheckFunction
    reads: bool = False  # only reads that tolerate a little lag: a usable read replica may answer


_registry: list[Check] = []


def register(name: str, *, step: int, listed: int | None = None,
             reads: bool = False) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check under the flag `name` (ALWAYS: run whatever is chosen), run at `step`; `reads`: on a
    usable read replica when there is one."""
    def decorate(function: CheckFunction) -> CheckFunction:
        _registry.append(Check(name, step, step if listed is None else listed, function, reads))
        return function
    return decorate


def names() -> tuple[str, ...]:
    """The flags, in the order `dbcheck` lists them: every name a registered check carries."""
    first: dict[str, int] = {}
    for item in _registry:
        if item.name != ALWAYS:
            first[item.name] = min(first.get(item.name, item.listed), item.listed)
    return tuple(sorted(first, key=lambda name: first[name]))


def check(connection: BaseDatabaseWrapper, checks: tuple[str, ...] | None = None) -> HealthReport:
    """Run the chosen checks (all by default) in step order, stopping where a check says the rest cannot be trusted."""
    chosen = names() if checks is None else checks
    report = HealthReport(database=connection.alias, vendor=connection.vendor)
    for item in sorted(_registry, key=lambda item: item.step):
        if item.name == ALWAYS or item.name in chosen:
            item.function(read_connection(connection) if item.reads else connection, report)
            if report.stopped:
                break
    return report


def sizes(connection: BaseDatabaseWrapper) -> dict[str, int | float]:
    """Database (and WAL) size in bytes; on SQLite also pages and the share of free pages."""
    if connection.vendor == "sqlite":
        path = Path(connection.settings_dict["NAME"])
        wal = Path(f"{path}-wal")
        with connection.cursor() as cursor:
            page_size = cursor.execute("PRAGMA page_size").fetchone()[0]
            page_count = cursor.execute("PRAGMA page_count").fetchone()[0]
            free = cursor.execute("PRAGMA freelist_count").fetchone()[0]
        return {
            "database_bytes": path.stat().st_size if path.exists() else 0,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "page_size": page_size, "page_count": page_count, "free_pages": free,
            "free_ratio": round(free / page_count, 4) if page_count else 0.0,
        }
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        db_bytes = int(cursor.fetchone()[0])
        cursor.execute("SELECT COALESCE(SUM(size), 0) FROM pg_ls_waldir()")
        wal_bytes = int(cursor.fetchone()[0])
    return {"database_bytes": db_bytes, "wal_bytes": wal_bytes}


def hot_queries() -> dict[str, Callable[[], QuerySet[Any]]]:
    """The named hot queries from settings."""
    return {name: import_string(path) for name, path in getattr(settings, "SONGSGEN_HOT_QUERIES", {}).items()}


def explain(connection: BaseDatabaseWrapper, queryset: QuerySet[Any]) -> tuple[list[str], list[str]]:
    """(plan lines, tables read by a full scan) for a QuerySet on this connection."""
    sql, params = queryset.using(connection.alias).query.sql_with_params()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            details = [row[3] for row in cursor.fetchall()]
        scans: list[str] = []
        for detail in details:
            match = re.match(r"SCAN (\S+)", detail)
            if match and "USING" not in detail:
                scans.append(match.group(1))
        return details, scans
    # Forbid sequential scans while explaining: a Seq Scan that remains means no index can serve the
    # query, whatever the table's size or statistics today.
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        raw = cursor.fetchone()[0]
    tree = json.loads(raw) if isinstance(raw, str) else raw
    lines: list[str] = []
    scans = []

    def walk(node: dict[str, Any], depth: int) -> None:
        relation = node.get("Relation Name")
        index = node.get("Index Name")
        lines.append("  " * depth + node["Node Type"] + (f" on {relation}" if relation else "")
                     + (f" using {index}" if index else ""))
        if node["Node Type"] == "Seq Scan" and relation:
            scans.append(relation)
        for child in node.get("Plans", []):
            walk(child, depth + 1)

    walk(tree[0]["Plan"], 0)
    return lines, scans


@register("plans", step=40, reads=True)
def plans(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """Explain each hot query; a full scan of a big table is an error."""
    limit = int(settings.DBCHECK_BIG_TABLE_ROWS)
    for name, make in hot_queries().items():
        lines, scans = explain(connection, make())
        report.plans[name] = lines
        if any("TEMP B-TREE" in line or line.strip().startswith("Sort") for line in lines):
            report.problems.append(Problem(
                "plans", name, "sorts its rows instead of reading an index in order", blocking=False,
            ))
        for table in scans:
            if table_rows_at_least(connection, table, limit):
                report.problems.append(Problem(
                    "plans", table, f"hot query {name!r} scans the whole table instead of an index",
                ))


@register("sizes", step=50)
def database_sizes(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """The database's and the WAL's sizes in the report."""
    report.sizes = sizes(connection)
