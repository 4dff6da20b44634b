"""Backup's `dbcheck` check: safety copies a restore that did not finish left beside the database."""

from __future__ import annotations

from pathlib import Path

from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db.backup import safetycopies
from songsgen.db.dbcheck import HealthReport, register
from songsgen.db.problems import Problem


@register("sizes", step=51)
def safety_copies(connection: BaseDatabaseWrapper, report: HealthReport) -> None:
    """SQLite: each safety copy a killed restore left, a warning with its size and how to remove it."""
    if connection.vendor != "sqlite":
        return
    report.problems += [
        Problem("sizes", item.path.name,
                f"{item.size / 2**20:,.1f} MiB safety copy left by a restore that did not finish; "
                f"remove it with `{safetycopies.REMOVE_COMMAND}` once you no longer need it", blocking=False)
        for item in safetycopies.leftovers(Path(connection.settings_dict["NAME"]))
    ]
