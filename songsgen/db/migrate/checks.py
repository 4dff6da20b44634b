"""The safe migrate's `dbcheck` checks: a migrate that died half-way, integrity, schema drift, rehearsal leftovers."""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor

from songsgen.db.dbcheck import ALWAYS, HealthReport, register
from songsgen.db.migrate import marker, rehearse_leftovers, schema
from songsgen.db.migrate.online import leftovers as online_leftovers
from songsgen.db.problems import Problem
from songsgen.db.replicas.health import aliases as replica_aliases


@register(ALWAYS, step=0)
def interrupted_migrate(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """A migrate that died half-way (its marker left, nobody holding the lock), with what the next migrate says."""
    data = marker.left_by_dead_run(connection, purpose="dbcheck")
    if data is None:
        return
    # The applied set as migrate reads it (the loader's: squashed migrations counted as migrate counts them).
    committed, message = marker.verdict(data, set(MigrationExecutor(connection).loader.applied_migrations))
    if committed:
        report.problems.append(Problem("migrate", marker.path(connection).name, message,
                                       fix="manage.py migrate --resume-restore, then manage.py migrate"))
        return
    report.problems.append(Problem("migrate", marker.path(connection).name,
                                   f"{message}; run `manage.py migrate`: it clears the marker and carries on",
                                   fix="manage.py migrate"))


@register(ALWAYS, step=5)
def online_rebuild_leftovers(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """A killed online rebuild's shadow, triggers or old table: removed before the schema is compared."""
    report.problems += online_leftovers.dbcheck_problems(connection)


@register("integrity", step=10, listed=25)
def integrity(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """SQLite's page check and foreign keys; a damaged file makes every other answer unreliable."""
    report.problems += schema.integrity_problems(connection)
    report.stopped = any(p.code == "integrity" for p in report.problems)


def _expected(connection: BaseDatabaseWrapper, report: HealthReport, executor: MigrationExecutor | None = None) -> Any:
    """The schema the applied migrations describe, computed once per report."""
    if "expected" not in report.shared:
        state = schema.applied_state(executor or MigrationExecutor(connection))
        report.shared["expected"] = schema.expected_schema(state, connection)
    return report.shared["expected"]


@register("schema", step=20)
def schema_drift(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """The live schema against the one the applied migrations describe."""
    executor = MigrationExecutor(connection)
    expected = _expected(connection, report, executor)
    forgotten = schema.forgotten_by_state_only(executor, connection)
    report.problems += schema.compare_schema(expected, connection, forgotten)


@register("integrity", step=30, listed=25, reads=True)
def orphans(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """PostgreSQL: rows whose foreign keys point nowhere (SQLite's are in the integrity check); the rows may be
    read on a replica, the schema they should have is the primary's (no model is migrated on a replica)."""
    if connection.vendor == "postgresql":
        primary = connections[DEFAULT_DB_ALIAS] if connection.alias in replica_aliases() else connection
        report.problems += schema.orphan_problems(connection, _expected(primary, report))


@register("sizes", step=52)
def rehearsal_leftovers(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """A killed rehearsal's scratch copies: removed, or named while a migrate may be rehearsing on them."""
    report.problems += rehearse_leftovers.dbcheck_problems(connection)
