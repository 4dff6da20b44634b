"""`dbmaintain`: planner statistics, the WAL checkpoint (PASSIVE while replicating), VACUUM when worthwhile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.backup import replica
from songsgen.db.dbcheck import sizes


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
