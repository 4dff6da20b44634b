"""The last guarded migrate's outcome, kept beside the crash marker so monitoring can read it.

`manage.py migrate` records each guarded run that reached the live database (done, nothing to do,
rolled back, failed, a resumed rollback); `/metrics` exports its result and duration
(`songsgen.monitoring`). One small JSON file per database in the data folder, replaced whole: a reader
never sees half of it.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.migrate import marker
from songsgen.db.migrate.runstatus import RECORDED, SUCCESS

logger = logging.getLogger("songsgen.db.migrate.lastrun")


def path(connection: BaseDatabaseWrapper) -> Path:
    """The record for this database: named like its crash marker (same alias and digest)."""
    crash_marker = marker.path(connection)
    return crash_marker.with_name(crash_marker.name.replace("migrate-in-progress-", "migrate-last-run-", 1))


def record(connection: BaseDatabaseWrapper, report: Any) -> None:
    """Write the outcome of a guarded run (a `songsgen.db.migrate.run.Report`); never fails the migrate."""
    if report.status not in RECORDED:
        return
    seconds = report.seconds.get("total", sum(report.seconds.values()))
    data = {
        "status": str(report.status), "success": report.status in SUCCESS, "seconds": round(float(seconds), 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"), "database": connection.alias,
        "applied": [entry.get("migration") for entry in report.applied],
        "longest_lock_seconds": report.longest_lock_seconds,
        "online_rebuilds": len(report.online),
        "failed_migration": report.failed_migration, "error": next(iter((report.error or "").splitlines()), ""),
    }
    where = path(connection)
    tmp = where.with_name(where.name + ".tmp")
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, where)
    except OSError as exc:  # monitoring loses one record; the migrate's own result stands
        logger.warning("Could not record the migrate's result in %s: %s", where, exc)


def read(connection: BaseDatabaseWrapper) -> dict[str, Any] | None:
    """The last recorded run, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(path(connection).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
