"""`manage.py seed_demo --users N --songs M`: append realistic demo data, fast."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from songs.demo import DEFAULT_BATCH_SIZE, DEMO_PASSWORD, Progress, SeedError, seed_demo_data
from songsgen.cli import non_negative_int, positive_int


class Command(BaseCommand):
    help = (
        "Append demo data: N users and M songs over the last two years, with queue entries for the songs not "
        "yet completed. Bulk-writes below the ORM (executemany on SQLite, COPY on PostgreSQL); run it on an "
        "idle database."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=non_negative_int, default=0, help="Users to add (default 0).")
        parser.add_argument("--songs", type=non_negative_int, default=0, help="Songs to add (default 0).")
        parser.add_argument(
            "--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
            help=f"Rows per transaction (default {DEFAULT_BATCH_SIZE:,}).",
        )
        parser.add_argument("--seed", type=int, default=None, help="Random seed, for repeatable content.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: default).")

    def handle(
        self, *args: Any, users: int, songs: int, batch_size: int, seed: int | None, database: str, verbosity: int,
        **options: Any,
    ) -> None:
        self.verbosity = verbosity
        try:
            result = seed_demo_data(
                users=users, songs=songs, batch_size=batch_size, seed=seed, using=database, progress=self._progress
            )
        except SeedError as exc:
            raise CommandError(str(exc)) from exc
        if verbosity < 1:
            return
        self.stdout.write(self.style.SUCCESS(
            f"Added {result.users:,} users, {result.songs:,} songs and {result.queue_entries:,} queue entries "
            f"in {result.seconds:.1f} s (run token {result.token!r}; password {DEMO_PASSWORD!r})."
        ))

    def _progress(self, progress: Progress) -> None:
        if self.verbosity < 1:
            return
        share = progress.done / progress.total if progress.total else 1.0
        self.stdout.write(
            f"{progress.phase:>5}: {progress.done:>12,} / {progress.total:,} ({share:4.0%})  {progress.elapsed:6.1f} s"
        )
