"""The moves' `dbcheck` check: inactive replication slots (an interrupted pgupgrade's, or anyone's)."""

from __future__ import annotations

import re

from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.dbcheck import HealthReport, register
from songsgen.db.problems import Problem


@register("slots", step=60)
def slots(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """PostgreSQL: every inactive replication slot of the server, a warning with the WAL it keeps from being
    recycled (a logical one also holds back VACUUM in the catalogs): nobody consumes it, so the disk fills."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT slot_name, slot_type, database, pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN "
            "pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::bigint, current_database() "
            "FROM pg_replication_slots WHERE NOT active ORDER BY slot_name"
        )
        rows = cursor.fetchall()
    for name, kind, database, retained, here in rows:
        url = "$DATABASE_URL" if database == here else f"<the URL of database {database}>"
        if name.startswith("songsgen_pgupgrade") or re.fullmatch(r"pg_\d+_sync_\d+_\d+", name):
            fix = (f"manage.py pgupgrade --cleanup --from {url} (an interrupted pgupgrade's; else drop the "
                   "subscription that made it on its subscriber)")
        else:
            fix = f"SELECT pg_drop_replication_slot('{name}') once nothing will consume it again"
        keeps = f"keeps {retained / 2**20:,.1f} MiB of WAL" if retained is not None else "keeps no WAL yet"
        where = f" in database {database}" if database else ""
        report.problems.append(Problem("slots", name, f"inactive {kind} replication slot{where} {keeps}; nobody "
                                f"consumes it, so the WAL grows until the disk fills: {fix}", blocking=False, fix=fix))
