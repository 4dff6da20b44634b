"""The queue at a glance: counts by status, the oldest queued job, recent failures and throughput.

One query of indexed scalar subqueries; with `cap`, counts stop at `cap` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime


def _db_datetime(value: datetime | str | None) -> datetime | None:
    """A datetime read by raw SQL: SQLite gives Django's naive-UTC text, PostgreSQL a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = parse_datetime(value)
    if parsed is not None and timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@dataclass(frozen=True)
class QueueStats:
    """The queue at a glance (queue_stats and the admin's queue page)."""

    counts: dict[str, int]  # by status; a count equal to `cap` means "at least"
    cap: int | None
    oldest_queued_at: datetime | None
    failed_last_hour: int
    done_last_hour: int
    done_last_minute: int
    now: datetime

    @property
    def oldest_queued_age(self) -> float | None:
        """Seconds the oldest queued job has waited."""
        return None if self.oldest_queued_at is None else (self.now - self.oldest_queued_at).total_seconds()

    @property
    def per_second_last_minute(self) -> float:
        """Jobs finished per second over the last minute."""
        return self.done_last_minute / 60

    def as_dict(self) -> dict[str, object]:
        return {
            "counts": self.counts,
            "capped_at": self.cap,
            "oldest_queued_at": self.oldest_queued_at.isoformat() if self.oldest_queued_at else None,
            "oldest_queued_age_seconds": self.oldest_queued_age,
            "failed_last_hour": self.failed_last_hour,
            "done_last_hour": self.done_last_hour,
            "done_last_minute": self.done_last_minute,
            "throughput_per_second_last_minute": round(self.per_second_last_minute, 2),
        }


def queue_stats(jobs: QuerySet[Any], *, now: datetime | None = None, cap: int | None = None) -> QueueStats:
    """The figures of `jobs`' table (a GenerationQueue QuerySet: its database and model)."""
    now = now or timezone.now()
    connection = connections[jobs.db]
    qn = connection.ops.quote_name
    adapt = connection.ops.adapt_datetimefield_value
    table = qn(jobs.model._meta.db_table)
    statuses = [value for value, _ in jobs.model.Status.choices]

    def count(where: str) -> str:
        if cap is None:
            return f"(SELECT COUNT(*) FROM {table} WHERE {where})"
        return f"(SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE {where} LIMIT {int(cap)}) AS capped)"

    status, completed = qn("status"), qn("completed_at")
    parts = [count(f"{status} = %s") for _ in statuses]
    params: list[Any] = list(statuses)
    parts.append(f"(SELECT MIN({qn('queued_at')}) FROM {table} WHERE {status} = %s)")
    params.append(jobs.model.Status.QUEUED)
    for state, since in (("failed", timedelta(hours=1)), ("done", timedelta(hours=1)),
                         ("done", timedelta(minutes=1))):
        parts.append(count(f"{status} = %s AND {completed} >= %s"))
        params += [state, adapt(now - since)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        row = cursor.fetchone()
    n = len(statuses)
    return QueueStats(
        counts=dict(zip(statuses, (int(v) for v in row[:n]), strict=True)), cap=cap,
        oldest_queued_at=_db_datetime(row[n]), failed_last_hour=int(row[n + 1]),
        done_last_hour=int(row[n + 2]), done_last_minute=int(row[n + 3]), now=now,
    )
