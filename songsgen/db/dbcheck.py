"""`dbcheck` and `dbmaintain`: is the database sound and fast, and keep it so.

The hot queries come from settings.SONGSGEN_HOT_QUERIES (name -> dotted path of a callable returning a
QuerySet; the project's are in songsgen/hot_queries.py), so this module never imports an app's models.
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
from django.db.migrations.executor import MigrationExecutor
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from songsgen.db.backup import replica, safetycopies
from songsgen.db.migrate import marker, rehearse_leftovers, schema
from songsgen.db.problems import Problem
from songsgen.db.rowcounts import table_rows_at_least

CHECKS = ("schema", "integrity", "plans", "sizes", "slots")


@dataclass
class HealthReport:
    database: str
    vendor: str
    problems: list[Problem] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)
    sizes: dict[str, int | float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(p.blocking for p in self.problems)

    def as_json(self) -> str:
        return json.dumps({
            "database": self.database, "vendor": self.vendor, "ok": self.ok,
            "problems": [p.as_dict() for p in self.problems], "plans": self.plans, "sizes": self.sizes,
        }, indent=2)


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


def plan_problems(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
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


def interrupted_migrate(connection: BaseDatabaseWrapper) -> list[Problem]:
    """A migrate that died half-way (its marker left, nobody holding the lock), with what the next migrate says."""
    data = marker.left_by_dead_run(connection, purpose="dbcheck")
    if data is None:
        return []
    # The applied set as migrate reads it (the loader's: squashed migrations counted as migrate counts them).
    committed, message = marker.verdict(data, set(MigrationExecutor(connection).loader.applied_migrations))
    if committed:
        return [Problem("migrate", marker.path(connection).name, message,
                        fix="manage.py migrate --resume-restore, then manage.py migrate")]
    return [Problem("migrate", marker.path(connection).name,
                    f"{message}; run `manage.py migrate`: it clears the marker and carries on",
                    fix="manage.py migrate")]


def slot_problems(connection: BaseDatabaseWrapper) -> list[Problem]:
    """PostgreSQL: every inactive replication slot of the server, a warning with the WAL it keeps from being
    recycled (a logical one also holds back VACUUM in the catalogs): nobody consumes it, so the disk fills."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT slot_name, slot_type, database, pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN "
            "pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::bigint, current_database() "
            "FROM pg_replication_slots WHERE NOT active ORDER BY slot_name"
        )
        rows = cursor.fetchall()
    problems = []
    for name, kind, database, retained, here in rows:
        url = "$DATABASE_URL" if database == here else f"<the URL of database {database}>"
        if name.startswith("songsgen_pgupgrade") or re.fullmatch(r"pg_\d+_sync_\d+_\d+", name):
            fix = (f"manage.py pgupgrade --cleanup --from {url} (an interrupted pgupgrade's; else drop the "
                   "subscription that made it on its subscriber)")
        else:
            fix = f"SELECT pg_drop_replication_slot('{name}') once nothing will consume it again"
        keeps = f"keeps {retained / 2**20:,.1f} MiB of WAL" if retained is not None else "keeps no WAL yet"
        where = f" in database {database}" if database else ""
        problems.append(Problem("slots", name, f"inactive {kind} replication slot{where} {keeps}; nobody "
                                f"consumes it, so the WAL grows until the disk fills: {fix}", blocking=False, fix=fix))
    return problems


def check(connection: BaseDatabaseWrapper, checks: tuple[str, ...] = CHECKS) -> HealthReport:
    """Run the chosen checks; a migrate that died half-way is reported whichever are chosen."""
    report = HealthReport(database=connection.alias, vendor=connection.vendor)
    report.problems += interrupted_migrate(connection)
    if "integrity" in checks:
        report.problems += schema.integrity_problems(connection)
        if any(p.code == "integrity" for p in report.problems):
            return report  # a damaged file makes every other answer unreliable
    expected = None
    if "schema" in checks:
        executor = MigrationExecutor(connection)
        state = schema.applied_state(executor)
        expected = schema.expected_schema(state, connection)
        forgotten = schema.forgotten_by_state_only(executor, connection)
        report.problems += schema.compare_schema(expected, connection, forgotten)
    if "integrity" in checks and connection.vendor == "postgresql":
        if expected is None:
            state = schema.applied_state(MigrationExecutor(connection))
            expected = schema.expected_schema(state, connection)
        report.problems += schema.orphan_problems(connection, expected)
    if "plans" in checks:
        plan_problems(connection, report)
    if "sizes" in checks:
        report.sizes = sizes(connection)
        if connection.vendor == "sqlite":
            report.problems += [
                Problem("sizes", item.path.name,
                        f"{item.size / 2**20:,.1f} MiB safety copy left by a restore that did not finish; "
                        f"remove it with `{safetycopies.REMOVE_COMMAND}` once you no longer need it", blocking=False)
                for item in safetycopies.leftovers(Path(connection.settings_dict["NAME"]))
            ]
        report.problems += rehearse_leftovers.dbcheck_problems(connection)  # a killed rehearsal's scratch copies
    if "slots" in checks and connection.vendor == "postgresql":
        report.problems += slot_problems(connection)
    return report


def maintain(connection: BaseDatabaseWrapper, *, dry_run: bool, log: Callable[[str], None]) -> list[str]:
    """Refresh planner statistics, truncate the WAL, VACUUM when much of the file is free; the steps done."""
    steps: list[str] = []

    def step(sql: str, why: str) -> Any:
        steps.append(sql)
        log(("would run " if dry_run else "running ") + f"{sql}  ({why})")
        if dry_run:
            return None
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else None

    if connection.vendor == "sqlite":
        step("PRAGMA optimize", "refresh planner statistics where they are stale")
        mode = replica.checkpoint_mode(Path(connection.settings_dict["NAME"]), "TRUNCATE")  # PASSIVE if replicating
        result = step(f"PRAGMA wal_checkpoint({mode})", "copy the WAL into the database and truncate it")
        if result and result[0][0]:
            log("checkpoint was busy: a reader held the WAL; run again later")
        info = sizes(connection)
        ratio, threshold = info["free_ratio"], float(settings.DBMAINTAIN_VACUUM_FREE_RATIO)
        if ratio > threshold:
            step("VACUUM", f"{ratio:.0%} of pages are free, above {threshold:.0%}")
        else:
            log(f"no VACUUM: {ratio:.0%} of pages free, threshold {threshold:.0%}")
    else:
        step("ANALYZE", "refresh planner statistics")
        log("no VACUUM: PostgreSQL's autovacuum reclaims space")
    return steps
