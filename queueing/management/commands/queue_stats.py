"""`manage.py queue_stats`: the generation queue at a glance."""

from __future__ import annotations

import json as jsonlib
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from queueing.models import GenerationQueue


def format_age(seconds: float | None) -> str:
    """A wait as a person reads it: 42s, 5m 03s, 2h 10m."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


class Command(BaseCommand):
    help = "Counts by status, the oldest queued job's wait, failures in the last hour and recent throughput."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")

    def handle(self, *args: Any, json: bool, **options: Any) -> None:
        stats = GenerationQueue.objects.stats()
        if json:
            self.stdout.write(_json_dumps(stats.as_dict()))
            return
        for status, count in stats.counts.items():
            self.stdout.write(f"{status:<22}{count:>10}")
        self.stdout.write(f"{'oldest queued':<22}{format_age(stats.oldest_queued_age):>10}")
        self.stdout.write(f"{'failed, last hour':<22}{stats.failed_last_hour:>10}")
        self.stdout.write(f"{'done, last hour':<22}{stats.done_last_hour:>10}")
        self.stdout.write(f"{'jobs/s, last minute':<22}{stats.done_last_minute / 60:>10.2f}")


def _json_dumps(data: dict[str, Any]) -> str:
    return jsonlib.dumps(data, sort_keys=True)
