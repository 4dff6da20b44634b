"""The physical (streaming) standbys of a server, as its primary sees them: what pgupgrade refuses to leave behind."""

from __future__ import annotations

import psycopg

# Each walsender is a row of pg_stat_replication, its pid shown to any role (the other columns need pg_read_all_stats
# or a superuser; pg_stat_activity's backend_type and datname are NULL for another role's backends, so a REPLICATION
# role looking there would see no standby). The logical ones hold an active logical slot; the rest stream WAL to a
# physical standby (or pg_basebackup). Also logical, though perhaps not holding its slot yet: a walsender connected to
# a database (its datname, when the role may see it) and a subscription's table-sync worker (PostgreSQL names it
# pg_<subscription oid>_sync_<table oid>_<system id>). A physical slot whose standby is down still names one.
STANDBYS = r"""
SELECT COALESCE(NULLIF(r.application_name, ''), 'walsender pid ' || r.pid)
       || COALESCE(' from ' || host(r.client_addr), '') || COALESCE(' (slot ' || s.slot_name || ')', '')
FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
     LEFT JOIN pg_stat_activity a ON a.pid = r.pid
WHERE r.pid NOT IN (SELECT active_pid FROM pg_replication_slots WHERE slot_type = 'logical' AND active_pid IS NOT NULL)
  AND a.datname IS NULL
  AND r.application_name NOT LIKE 'pg\_%\_sync\_%'
UNION ALL
SELECT 'physical slot ' || slot_name || ' (inactive)' FROM pg_replication_slots
WHERE slot_type = 'physical' AND NOT active
"""


def physical_standbys(conn: psycopg.Connection) -> list[str]:
    """Each physical standby streaming from the server (or holding a physical slot on it), named, sorted."""
    return sorted(str(row[0]) for row in conn.execute(STANDBYS))
