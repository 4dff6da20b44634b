"""The physical (streaming) standbys of a server, as its primary sees them: what pgupgrade refuses to leave behind."""

from __future__ import annotations

import psycopg

# A walsender with no database streams WAL to a physical standby (or pg_basebackup); a logical one has a database.
# A physical slot whose standby is down still names one. Address and application_name need pg_read_all_stats or a
# superuser; without them the process id is shown.
STANDBYS = """
SELECT COALESCE(NULLIF(a.application_name, ''), 'walsender pid ' || a.pid)
       || COALESCE(' from ' || host(a.client_addr), '') || COALESCE(' (slot ' || s.slot_name || ')', '')
FROM pg_stat_activity a LEFT JOIN pg_replication_slots s ON s.active_pid = a.pid
WHERE a.backend_type = 'walsender' AND a.datname IS NULL
UNION ALL
SELECT 'physical slot ' || slot_name || ' (inactive)' FROM pg_replication_slots
WHERE slot_type = 'physical' AND NOT active
"""


def physical_standbys(conn: psycopg.Connection) -> list[str]:
    """Each physical standby streaming from the server (or holding a physical slot on it), named, sorted."""
    return sorted(str(row[0]) for row in conn.execute(STANDBYS))
