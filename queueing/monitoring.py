"""The queue's part of /health and /metrics: waits, stuck leases, depth, outcomes, job durations.

Indexed queries with capped counts, so the cost does not grow with the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from health_check.exceptions import ServiceUnavailable
from prometheus_client.metrics_core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric

from queueing.models import GenerationQueue, GenerationQueueQuerySet
from songsgen.db.replicas import read_connection
from songsgen.monitoring.checks import SHOWN, SongsgenCheck, duration
from songsgen.monitoring.metrics import ProbeResults, gauge

COUNT_CAP = 10_000
# Job durations: the newest jobs done within the last hour, at most this many (a bounded read).
DURATION_SAMPLE = 1_000
DURATION_WINDOW = timedelta(hours=1)
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
# Finished jobs are counted over these windows, by outcome.
WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1)}
FINISHED = (GenerationQueue.Status.DONE.value, GenerationQueue.Status.FAILED.value)


def _jobs(connection: BaseDatabaseWrapper) -> GenerationQueueQuerySet:
    return GenerationQueue.objects.using(connection.alias)


def _capped(queryset: GenerationQueueQuerySet) -> int:
    """COUNT over at most COUNT_CAP rows: SELECT COUNT(*) FROM (… LIMIT cap)."""
    return queryset[:COUNT_CAP].count()


def stuck(connection: BaseDatabaseWrapper, now: datetime) -> list[GenerationQueueQuerySet]:
    """Running jobs whose lease ran out more than HEALTH_LEASE_GRACE_SECONDS ago (or
    that never had one): nobody reclaims them. Two querysets, each a range of the
    partial index queue_lease_expiry."""
    grace = timedelta(seconds=float(settings.HEALTH_LEASE_GRACE_SECONDS))
    running = _jobs(connection).running()
    return [running.filter(lease_expires_at__lt=now - grace), running.filter(lease_expires_at__isnull=True)]


def oldest_queued_at(connection: BaseDatabaseWrapper) -> datetime | None:
    """When the oldest queued job was queued (a retry keeps its time), or None.

    A plain MIN(queued_at) reads every queued entry, since the indexes order by priority first; this
    walks the distinct priorities down queue_status_order (a loose index scan) and takes each one's
    first entry: a few index seeks however long the queue.
    """
    qn = connection.ops.quote_name
    table, status, priority = qn(GenerationQueue._meta.db_table), qn("status"), qn("priority")
    sql = (
        f"WITH RECURSIVE levels(p) AS (SELECT MAX({priority}) FROM {table} WHERE {status} = %s "
        f"UNION ALL SELECT (SELECT MAX({priority}) FROM {table} WHERE {status} = %s AND {priority} < levels.p) "
        f"FROM levels WHERE levels.p IS NOT NULL) "
        f"SELECT MIN((SELECT MIN({qn('queued_at')}) FROM {table} WHERE {status} = %s AND {priority} = levels.p)) "
        f"FROM levels WHERE levels.p IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [GenerationQueue.Status.QUEUED] * 3)
        value = cursor.fetchone()[0]
    if value is None or isinstance(value, datetime):
        return value
    parsed = parse_datetime(value)  # SQLite hands back Django's naive-UTC text
    return parsed.replace(tzinfo=UTC) if parsed is not None and timezone.is_naive(parsed) else parsed


@dataclass(frozen=True)
class QueueFigures:
    """The queue as /metrics shows it; every count stops at COUNT_CAP."""

    counts: dict[str, int]  # by status
    oldest_queued_at: datetime | None
    finished: dict[tuple[str, str], int]  # (outcome, window) -> jobs that finished within it
    stuck: int
    durations: list[float]  # seconds from start to done of the sampled jobs
    now: datetime

    @property
    def oldest_queued_age(self) -> float:
        """Seconds the oldest queued job has waited; 0 when none is queued."""
        return 0.0 if self.oldest_queued_at is None else (self.now - self.oldest_queued_at).total_seconds()


def figures(connection: BaseDatabaseWrapper, now: datetime | None = None) -> QueueFigures:
    """Every figure /metrics needs, by small indexed queries (each a bounded range of one index)."""
    now = now or timezone.now()
    jobs = _jobs(connection)
    finished = {(outcome, label): _capped(jobs.filter(status=outcome, completed_at__gte=now - span))
                for outcome in FINISHED for label, span in WINDOWS.items()}
    return QueueFigures(
        counts={status: _capped(jobs.filter(status=status)) for status in GenerationQueue.Status.values},
        oldest_queued_at=oldest_queued_at(connection), finished=finished,
        stuck=sum(_capped(part) for part in stuck(connection, now)),
        durations=recent_durations(connection, now), now=now,
    )


def recent_durations(connection: BaseDatabaseWrapper, now: datetime) -> list[float]:
    """Start-to-done seconds of the newest DURATION_SAMPLE jobs done within DURATION_WINDOW.

    A backward walk of queue_status_completed, the window applied per row: a lower bound in the
    WHERE lets PostgreSQL misjudge the range and sort it. The database subtracts, so seconds come
    back as numbers: converting 1,000 timestamps cost more than finding the rows.
    """
    qn = connection.ops.quote_name
    started, completed = qn("started_at"), qn("completed_at")
    if connection.vendor == "postgresql":
        seconds = f"EXTRACT(EPOCH FROM ({completed} - {started}))"
    else:
        seconds = f"(julianday({completed}) - julianday({started})) * 86400.0"
    sql = (f"SELECT CASE WHEN {completed} >= %s THEN {seconds} END FROM {qn(GenerationQueue._meta.db_table)} "
           f"WHERE {qn('status')} = %s AND {completed} IS NOT NULL ORDER BY {completed} DESC LIMIT %s")
    since = connection.ops.adapt_datetimefield_value(now - DURATION_WINDOW)
    with connection.cursor() as cursor:
        cursor.execute(sql, [since, GenerationQueue.Status.DONE.value, DURATION_SAMPLE])
        # Milliseconds: SQLite's julianday arithmetic is off by some 20 µs, enough to put a 60 s
        # job past le=60.
        return [max(0.0, round(float(value), 3)) for (value,) in cursor.fetchall() if value is not None]


# --- /metrics
# ---------------------------------------------------------------------------------------
def queue_metrics(connection: BaseDatabaseWrapper, results: ProbeResults) -> Iterator[Metric]:
    """Depth by status, oldest wait, outcomes, stuck leases and job durations."""
    queue = results.run("queue", lambda: figures(read_connection(connection)))  # a usable replica's counts
    if queue is None:
        return
    yield from gauge("songsgen_queue_count_cap", "Queue counts stop here: a count equal to it means at least.",
                     COUNT_CAP)
    depth = GaugeMetricFamily("songsgen_queue_jobs", "Jobs by status (capped at songsgen_queue_count_cap).",
                              labels=["status"])
    for status, count in queue.counts.items():
        depth.add_metric([status], float(count))
    yield depth
    yield from gauge("songsgen_queue_oldest_queued_age_seconds", "How long the oldest queued job has waited "
                     "(0: none queued).", queue.oldest_queued_age)
    finished = GaugeMetricFamily("songsgen_queue_jobs_finished", "Jobs that finished within the window, by "
                                 "outcome (capped at songsgen_queue_count_cap).", labels=["outcome", "window"])
    for (outcome, window), count in queue.finished.items():
        finished.add_metric([outcome, window], float(count))
    yield finished
    yield from gauge("songsgen_queue_jobs_past_lease", "Running jobs whose lease ran out more than the grace "
                     "ago: no worker reclaims them.", queue.stuck)
    yield _durations(queue.durations)


def _durations(durations: list[float]) -> Metric:
    family = GaugeHistogramMetricFamily(
        "songsgen_queue_job_duration_seconds",
        f"Start to done of the newest jobs done within the last hour (at most {DURATION_SAMPLE}).",
    )
    buckets = [(str(float(bound)), float(sum(1 for d in durations if d <= bound))) for bound in DURATION_BUCKETS]
    family.add_metric([], [*buckets, ("+Inf", float(len(durations)))], gsum_value=float(sum(durations)))
    return family


# --- /health
# ----------------------------------------------------------------------------------------
class QueueWaitCheck(SongsgenCheck):
    """The oldest queued job has waited less than HEALTH_QUEUE_MAX_WAIT_SECONDS."""

    name = "queue wait"
    reads_replica = True

    def check(self, connection: BaseDatabaseWrapper) -> None:
        oldest = oldest_queued_at(connection)
        limit = float(settings.HEALTH_QUEUE_MAX_WAIT_SECONDS)
        age = 0.0 if oldest is None else (timezone.now() - oldest).total_seconds()
        if age > limit:
            raise ServiceUnavailable(f"the oldest queued job has waited {duration(age, beside=limit)} (limit "
                                     f"{duration(limit)}). Are the workers running and keeping up? (docs/queue.md)")


class StuckJobsCheck(SongsgenCheck):
    """No running job is past its lease by more than the grace (else a dead worker's jobs sit)."""

    name = "queue leases"
    reads_replica = True

    def check(self, connection: BaseDatabaseWrapper) -> None:
        parts = stuck(connection, timezone.now())
        ids = sorted({pk for part in parts for pk in part.values_list("pk", flat=True)[:SHOWN]})
        if ids:
            count = sum(_capped(part) for part in parts)
            plus = "+" if count >= COUNT_CAP else ""  # the count stopped at the cap
            more = f" and {count - SHOWN}{plus} more" if count > SHOWN else ""
            raise ServiceUnavailable(
                f"{count}{plus} running job(s) past their lease by more than "
                f"{duration(float(settings.HEALTH_LEASE_GRACE_SECONDS))} "
                f"(job {', '.join(str(pk) for pk in ids[:SHOWN])}{more}): no worker reclaims them. Start "
                "`manage.py runworker` (docs/queue.md)."
            )
