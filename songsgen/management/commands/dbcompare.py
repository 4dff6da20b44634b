"""`manage.py dbcompare --from URL --to URL`: are two databases' tables equal, row for row?"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from songsgen.cli import add_database_pair
from songsgen.db.exceptions import DatabaseUnavailable
from songsgen.db.move import Comparison, TableComparison, compare_databases, render


class Command(BaseCommand):
    help = (
        "Compare every table of two databases (sqlite:///path or postgres://…): row counts and an "
        "order-independent checksum of every column, the same on both engines. Exits non-zero on any "
        "difference, naming the table and, where it can, the primary keys."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_pair(parser, source_help="The reference database.", target_help="The database to check.")
        parser.add_argument("--json", dest="as_json", action="store_true", help="Print the results as JSON.")

    def handle(self, *args: Any, source: str, target: str, as_json: bool, verbosity: int, **options: Any) -> None:
        started = time.monotonic()

        def progress(table: TableComparison) -> None:
            # One line per table on stderr, so a long comparison shows it is moving
            # (stdout stays the result).
            rows = "" if table.source_rows is None else f", {table.source_rows:,} rows"
            self.stderr.write(f"compared {table.table}{rows} ({time.monotonic() - started:.1f}s elapsed)")

        try:
            comparison = compare_databases(source, target, on_table=progress if verbosity else None)
        except DatabaseUnavailable as exc:
            raise CommandError(str(exc)) from exc
        if as_json:
            self.stdout.write(_dumps(comparison))
        elif verbosity:
            self.stdout.write("\n".join(render(comparison)))
        if not comparison.equal:
            raise CommandError(
                "Databases differ in: " + "; ".join(f"{t.table} ({t.describe()})" for t in comparison.differences)
            )


def _dumps(comparison: Comparison) -> str:
    return json.dumps(
        {"equal": comparison.equal, "tables": [t.as_dict() for t in comparison.tables]}, indent=2, ensure_ascii=False
    )
