"""`manage.py dbcheck`: schema drift, integrity and foreign keys, hot-query plans, sizes."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

import songsgen.db.backup  # noqa: F401  (each product's package registers its checks)
import songsgen.db.migrate  # noqa: F401
import songsgen.db.move  # noqa: F401
from songsgen.db import dbcheck


class Command(BaseCommand):
    help = (
        "Check the database: the live schema against the migrations, integrity and foreign keys (orphans), the "
        "query plans of the named hot queries, database and WAL sizes. Exit 1 when something is wrong."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        for name in dbcheck.names():
            parser.add_argument(f"--{name}", action="store_true", help=f"Run the {name} check (default: all).")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: default).")

    def handle(self, *args: Any, json: bool, database: str, verbosity: int, **options: Any) -> None:
        checks = tuple(name for name in dbcheck.names() if options[name]) or dbcheck.names()
        report = dbcheck.check(connections[database], checks)
        if json:
            self.stdout.write(report.as_json())
        elif verbosity >= 1:
            for name, lines in report.plans.items():
                self.stdout.write(f"plan of {name}:")
                for line in lines:
                    self.stdout.write(f"    {line}")
            for key, value in report.sizes.items():
                self.stdout.write(f"{key}: {value:,}")
            for problem in report.problems:
                self.stdout.write(problem.line())
        errors = [p for p in report.problems if p.blocking]
        if errors:
            raise CommandError(f"{len(errors)} problem(s) found; first: {errors[0]}")
        if verbosity >= 1 and not json:
            self.stdout.write(self.style.SUCCESS(f"OK: {', '.join(checks)}"))
