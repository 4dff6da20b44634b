"""`manage.py transferdb --from URL --to URL`: copy every table elsewhere and prove the copy."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from songsgen.cli import add_database_pair, non_negative_float, positive_int
from songsgen.db.exceptions import TransferError
from songsgen.db.move import DEFAULT_BATCH_SIZE, TableComparison, describe, render, transfer
from songsgen.progress import Progress


class Command(BaseCommand):
    help = (
        "Copy every table from one database to another (sqlite:///path or postgres://user:pw@host/db), in "
        "dependency order and keyset batches, then compare row counts and checksums of every table. The target "
        "must be migrated to the same state and hold no data (or give --truncate)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_database_pair(parser, source_help="Source database URL.", target_help="Target database URL.")
        parser.add_argument("--truncate", action="store_true", help="Empty the target's tables first.")
        parser.add_argument("--resume", action="store_true", help="Continue an interrupted transfer.")
        parser.add_argument(
            "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
            help=f"Rows per batch and transaction (default {DEFAULT_BATCH_SIZE:,}).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Check everything and show the plan; write nothing.")
        parser.add_argument("--lock-wait", type=non_negative_float, default=0.0, metavar="SECONDS",
                            help="Wait this long for a migrate or restore of the target to finish (default 0).")

    def handle(
        self, *args: Any, source: str, target: str, truncate: bool, resume: bool, batch_size: int, dry_run: bool,
        lock_wait: float, verbosity: int, **options: Any,
    ) -> None:
        self.verbosity = verbosity
        self._last_line = 0.0
        try:
            result = transfer(
                source, target, batch_size=batch_size, truncate=truncate, resume=resume, dry_run=dry_run,
                report=self._progress if verbosity else None, on_table=self._table_done if verbosity > 1 else None,
                lock_wait=lock_wait,
            )
        except TransferError as exc:
            raise CommandError(str(exc)) from exc
        if result.comparison is None:
            self.stdout.write("Dry run: checks passed; nothing was written. Would copy:")
            for name, rows in result.tables:
                self.stdout.write(f"  {name}: {rows:,} rows")
            return
        if verbosity:
            self.stdout.write("\n".join(render(result.comparison)))
        if not result.comparison.equal:
            raise CommandError(
                "The copy differs from the source in: "
                + "; ".join(f"{t.table} ({t.describe()})" for t in result.comparison.differences)
            )
        if verbosity:
            rate = result.copied / result.seconds if result.seconds else 0.0
            self.stdout.write(self.style.SUCCESS(
                f"{'Resumed and c' if result.resumed else 'C'}opied {result.copied:,} rows in {result.seconds:.1f}s "
                f"({rate:,.0f} rows/s, proof included); source and target are equal."
            ))

    def _progress(self, progress: Progress) -> None:
        # One line a second (every batch at -v2), and always the last batch of a table.
        now = time.monotonic()
        last_of_table = progress.phase == "copy" and progress.table_done >= progress.table_total
        if self.verbosity > 1 or last_of_table or now - self._last_line >= 1.0:
            self._last_line = now
            self.stderr.write(describe(progress))

    def _table_done(self, result: TableComparison) -> None:
        self.stderr.write(f"verified {result.table}: {'ok' if result.equal else result.describe()}")
