"""`manage.py dbmaintain`: statistics, WAL checkpoint, VACUUM when worthwhile — for cron."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from songsgen.db.backup import maintain


class Command(BaseCommand):
    help = (
        "Routine upkeep: ANALYZE / PRAGMA optimize, a WAL checkpoint (TRUNCATE; PASSIVE while replicate runs), "
        "and VACUUM when free pages exceed SONGSGEN_DBMAINTAIN_VACUUM_FREE_RATIO. Safe to run from cron: silent "
        "on success unless -v2."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Say what would run; change nothing.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: default).")

    def handle(self, *args: Any, dry_run: bool, database: str, verbosity: int, **options: Any) -> None:
        def log(text: str) -> None:
            # quiet for cron; a dry run is asked to talk
            if verbosity >= 2 or (dry_run and verbosity >= 1):
                self.stdout.write(text)

        maintain(connections[database], dry_run=dry_run, log=log)
