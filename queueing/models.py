"""The generation queue: one row per attempt-series of generating one song.

A second kind of job would get a queue of its own rather than a generic one here.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import IntegrityError, connections, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from queueing.config import MAX_GENERATION_TIMEOUT
from queueing.stats import QueueStats, queue_stats
from songsgen.db.fields import concrete_field

# The order in which workers take jobs: highest priority first, then oldest, then by id so the
# order is total. Kept in one place; the partial index queue_claim follows it column for column.
CLAIM_ORDER = ("-priority", "queued_at", "id")


class TransitionError(Exception):
    """A job is not in a state that allows the requested transition."""


def retry_delay(attempt: int) -> timedelta:
    """Backoff before retry number `attempt` (1, 2, …): exponential, capped, with jitter.

    The jitter draws from the upper half of the window ("equal jitter"), so jobs that failed
    together (an outage of the generator) spread out but still wait at least half the nominal
    delay.
    """
    base = float(settings.SONGSGEN_RETRY_BACKOFF_SECONDS)
    cap = float(settings.SONGSGEN_RETRY_BACKOFF_MAX_SECONDS)
    nominal = min(cap, base * 2 ** max(0, attempt - 1))
    return timedelta(seconds=nominal * random.uniform(0.5, 1.0))


def song_model() -> type[models.Model]:
    """The song model, reached through the job's foreign key: queueing does not import songs."""
    related = GenerationQueue._meta.get_field("song").related_model
    assert isinstance(related, type), related
    return related


def songs(using: str) -> Any:
    """The song model's QuerySet on database `using`, with the song's own bulk transitions."""
    return song_model()._default_manager.using(using).all()


class GenerationQueueQuerySet(models.QuerySet["GenerationQueue"]):
    """Named filters over the queue, and the worker's atomic claim and reclaim."""

    def queued(self) -> GenerationQueueQuerySet:
        """Jobs waiting for a worker."""
        return self.filter(status=GenerationQueue.Status.QUEUED)

    def running(self) -> GenerationQueueQuerySet:
        return self.filter(status=GenerationQueue.Status.RUNNING)

    def failed(self) -> GenerationQueueQuerySet:
        return self.filter(status=GenerationQueue.Status.FAILED)

    def active(self) -> GenerationQueueQuerySet:
        """Jobs queued or running: at most one per song."""
        return self.filter(status__in=GenerationQueue.ACTIVE_STATUSES)

    def ready(self, now: datetime | None = None) -> GenerationQueueQuerySet:
        """Queued jobs whose backoff (if any) has passed."""
        now = now or timezone.now()
        return self.queued().filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))

    def in_claim_order(self) -> GenerationQueueQuerySet:
        """The order workers take jobs in (served by queue_claim for queued rows)."""
        return self.order_by(*CLAIM_ORDER)

    def next_job(self, now: datetime | None = None) -> GenerationQueueQuerySet:
        """The worker's next-job query: ready jobs in claim order (queue_claim; SQLite picks queue_status_order)."""
        return self.ready(now).in_claim_order()

    def expired(self, now: datetime | None = None) -> GenerationQueueQuerySet:
        """Running jobs whose worker stopped renewing the lease (or that never had one)."""
        now = now or timezone.now()
        return self.running().filter(Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True))

    # --- the worker's side
    # ---------------------------------------------------------------------------
    def claim_sql(self) -> str:
        """The claim: one UPDATE of the best ready jobs, returning their ids (see claim())."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        table = qn(self.model._meta.db_table)
        # SQLite has no row locks: the IMMEDIATE transaction around the statement serialises claims.
        lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
        # UPDATE … FROM a picked set rather than WHERE id IN (subquery): SQLite scans the whole
        # table for the IN form when the subquery reads the table being updated.
        return (
            f"UPDATE {table} SET {qn('status')} = %s, {qn('worker_id')} = %s, {qn('started_at')} = %s, "
            f"{qn('lease_expires_at')} = %s "
            f"FROM (SELECT {qn('id')} AS picked_id FROM {table} WHERE {qn('status')} = %s "
            f"AND ({qn('next_attempt_at')} IS NULL OR {qn('next_attempt_at')} <= %s) "
            f"ORDER BY {qn('priority')} DESC, {qn('queued_at')} ASC, {qn('id')} ASC LIMIT %s{lock}"
            f") AS picked WHERE {table}.{qn('id')} = picked.picked_id "
            f"RETURNING {table}.{qn('id')}, {table}.{qn('song_id')}"
        )

    def claim(
        self, *, worker_id: str, lease_seconds: float, limit: int = 1, now: datetime | None = None
    ) -> list[GenerationQueue]:
        """Take up to `limit` ready jobs for `worker_id`, best first; mark their songs generating.

        One statement picks and updates the jobs, so two workers never take the same job: on
        PostgreSQL its subquery locks with SKIP LOCKED (a worker passes over rows another is
        claiming instead of waiting); on SQLite the transaction begins IMMEDIATE, so claims run one
        after another. The songs follow in the same transaction.
        """
        now = now or timezone.now()
        connection = connections[self.db]
        adapt = connection.ops.adapt_datetimefield_value
        params = [
            GenerationQueue.Status.RUNNING, worker_id, adapt(now), adapt(now + timedelta(seconds=lease_seconds)),
            GenerationQueue.Status.QUEUED, adapt(now), int(limit),
        ]
        # Only the statements run inside the write transaction (on SQLite it holds the
        # database's one write lock, which other workers wait for); reading the jobs and
        # building them comes after.
        with transaction.atomic(using=self.db):
            with connection.cursor() as cursor:
                cursor.execute(self.claim_sql(), params)
                claimed = cursor.fetchall()
            if not claimed:
                return []
            # The songs' own transition, in bulk: one statement for the batch
            # instead of one per song.
            songs(self.db).filter(pk__in=[song for _, song in claimed]).mark_generating()
        # The jobs are this worker's until its lease runs out: reading them
        # after the commit is safe.
        jobs = self.model._base_manager.using(self.db).select_related("song").filter(pk__in=[pk for pk, _ in claimed])
        return list(jobs.order_by(*CLAIM_ORDER))

    def finish_held(
        self, *, worker_id: str, finished: list[tuple[GenerationQueue, str, float, str | None]]
    ) -> list[GenerationQueue]:
        """GenerationQueue.finish for a batch: (job, audio_path, generation_time, external_id) each.

        One UPDATE marks done the jobs `worker_id` still holds and returns their ids; their songs
        complete in the same transaction (Song's prepare_completions, validated and converted before
        it begins). Returns the jobs finished; a job whose lease was lost is left to its new holder.
        Any error (an invalid path, an external id already taken) leaves every job as it was.
        """
        if not finished:
            return []
        connection = connections[self.db]
        qn = connection.ops.quote_name
        table = qn(self.model._meta.db_table)
        now = timezone.now()
        by_id = {job.pk: job for job, *_ in finished}
        completions = songs(self.db).prepare_completions(
            (job.song, path, seconds, external_id) for job, path, seconds, external_id in finished
        )
        marks = ", ".join(["%s"] * len(by_id))
        sql = (
            f"UPDATE {table} SET {qn('status')} = %s, {qn('completed_at')} = %s, {qn('lease_expires_at')} = NULL, "
            f"{qn('error_message')} = '' WHERE {qn('id')} IN ({marks}) AND {qn('status')} = %s "
            f"AND {qn('worker_id')} = %s RETURNING {qn('id')}"
        )
        params = [GenerationQueue.Status.DONE.value, connection.ops.adapt_datetimefield_value(now), *by_id,
                  GenerationQueue.Status.RUNNING.value, worker_id]
        with transaction.atomic(using=self.db):
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                held = [by_id[row[0]] for row in cursor.fetchall()]
            completions.run(job.song_id for job in held)
        for job in held:
            job.status, job.completed_at = GenerationQueue.Status.DONE, now
            job.lease_expires_at, job.error_message = None, ""
        return held

    def renew_leases(self, *, worker_id: str, ids: list[int], lease_seconds: float) -> int:
        """Extend the lease of the jobs `worker_id` still holds; returns how many it holds."""
        if not ids:
            return 0
        return self.filter(pk__in=ids, status=GenerationQueue.Status.RUNNING, worker_id=worker_id).update(
            lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds)
        )

    def reclaim_expired(self, *, now: datetime | None = None, limit: int = 100) -> int:
        """Return jobs whose lease expired to the queue (or fail those out of retries); how many.

        The crashed attempt counts as a failed one. A look outside any transaction first: the usual
        answer is "none", and then no write lock is taken.
        """
        now = now or timezone.now()
        ids = list(self.expired(now).values_list("pk", flat=True)[:limit])
        if not ids:
            return 0
        reclaimed = 0
        with transaction.atomic(using=self.db):
            jobs = self.model._base_manager.using(self.db).select_related("song").filter(pk__in=ids)
            jobs = jobs.filter(pk__in=self.expired(now).values("pk"))
            if connections[self.db].features.has_select_for_update_skip_locked:
                jobs = jobs.select_for_update(skip_locked=True, of=("self",))
            for job in jobs:
                reclaimed += job._reclaim(now)
        return reclaimed

    def stats(self, *, now: datetime | None = None, cap: int | None = None) -> QueueStats:
        """Counts by status, oldest queued job, recent failures, throughput: one query (stats)."""
        return queue_stats(self, now=now, cap=cap)


class GenerationQueue(models.Model):
    """A song's generation job: queued, then taken by a worker, then done or failed."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"  # waiting for a worker
        RUNNING = "running", "Running"  # a worker holds it
        DONE = "done", "Done"  # the song was generated
        FAILED = "failed", "Failed"  # gave up after max_retries; error_message says why
        CANCELLED = "cancelled", "Cancelled"  # withdrawn by an operator before a worker took it

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    # What an operator's Retry puts back in the queue: a cancel is undone the same way.
    RETRYABLE_STATUSES = (Status.FAILED, Status.CANCELLED)

    song = models.ForeignKey("songs.Song", on_delete=models.CASCADE, related_name="queue_entries")
    priority = models.IntegerField(default=0, help_text="Higher runs first.")
    retry_count = models.IntegerField(
        default=0, help_text="Failed attempts that were retried so far (a crashed worker's attempt counts)."
    )
    max_retries = models.IntegerField(default=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    error_message = models.TextField(blank=True, default="")
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The lease: which worker holds a running job, and until when. A worker renews it while it
    # generates; once it has expired, reclaim_expired() returns the job to the queue.
    # Nullable (NULL: no worker holds it) so that adding it is a plain ADD COLUMN: SQLite rebuilds
    # the whole table to add a NOT NULL column.
    worker_id = models.CharField(max_length=100, null=True, blank=True,  # noqa: DJ001
                                 help_text="The worker holding this job while it runs; empty when none does.")
    lease_expires_at = models.DateTimeField(null=True, blank=True, help_text="The worker's hold ends here.")
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="Not claimed before this time (a retry's backoff); empty: at once."
    )
    # Nullable, so adding it is a plain ADD COLUMN; its type's CHECK (>= 0) comes with the
    # column, and the worker reads 0 (only writable around the model) as "the default",
    # never as "no limit".
    timeout_seconds = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(int(MAX_GENERATION_TIMEOUT))],
        help_text="Seconds one generation of this job may take; empty: SONGSGEN_GENERATION_TIMEOUT.",
    )

    objects = GenerationQueueQuerySet.as_manager()

    class Meta:
        verbose_name = "generation queue entry"
        verbose_name_plural = "generation queue"
        indexes = [
            # The worker's next-job query (GenerationQueueQuerySet.next_job): queued rows only, in
            # claim order, so the claim reads the first entry and never sorts.
            # next_attempt_at rides along so the backoff filter is checked in the index itself.
            models.Index(
                F("priority").desc(), F("queued_at"), F("id"), F("next_attempt_at"),
                name="queue_claim", condition=Q(status="queued"),
            ),
            # reclaim_expired(): running jobs whose lease ran out, without reading finished jobs.
            models.Index(F("lease_expires_at"), name="queue_lease_expiry", condition=Q(status="running")),
            # queue_stats(): jobs finished (done, failed) in the last hour, by a range scan.
            models.Index(F("status"), F("completed_at"), name="queue_status_completed"),
            # Jobs of one status in claim order: the admin's status filter and its capped count,
            # and counts by status. The planner may serve the claim from it too: either index
            # gives the claim its first row without a sort.
            models.Index(F("status"), F("priority").desc(), F("queued_at"), F("id"), name="queue_status_order"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "done", "failed", "cancelled"]),
                name="queue_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(retry_count__gte=0) & Q(retry_count__lte=F("max_retries")),
                name="queue_retry_count_in_range",
            ),
            models.UniqueConstraint(
                fields=["song"], condition=Q(status__in=["queued", "running"]), name="queue_one_active_per_song"
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} for song {self.song_id} ({self.status})"

    # --- operator transitions (admin actions) -----------------------------------------------------
    def retry(self) -> None:
        """Put a failed or cancelled job back in the queue, with a fresh set of attempts; its song follows."""
        try:
            with transaction.atomic():
                updated = GenerationQueue.objects.filter(pk=self.pk, status__in=self.RETRYABLE_STATUSES).update(
                    status=self.Status.QUEUED, retry_count=0, error_message="",
                    queued_at=timezone.now(), started_at=None, completed_at=None,
                )
                if not updated:
                    raise TransitionError(
                        f"Job {self.pk} is neither failed nor cancelled; only those can be retried.")
                self.refresh_from_db()
                self.song.mark_pending()
        except IntegrityError:
            raise TransitionError(
                f"Song {self.song_id} already has a queued or running job; job {self.pk} was left failed."
            ) from None

    def cancel(self) -> None:
        """Withdraw a job no worker has taken yet; its song is marked failed."""
        with transaction.atomic():
            # Conditional update: a worker claiming the job at this moment wins, and we refuse.
            updated = GenerationQueue.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
                status=self.Status.CANCELLED, completed_at=timezone.now(), error_message="Cancelled by an operator.",
            )
            if not updated:
                raise TransitionError(f"Job {self.pk} is not queued; only queued jobs can be cancelled.")
            self.refresh_from_db()
            self.song.mark_failed()

    # --- worker transitions: conditional on the worker still holding the job ----------------------
    def _update_held(self, holder: str, /, **fields: object) -> bool:
        """UPDATE this job if `worker_id` still holds it; False if its lease was lost.

        A prepared statement rather than QuerySet.update(): this runs once per job on the worker's
        hot path, where the ORM's query building cost more than the statement itself.
        """
        connection = connections[self._state.db or "default"]
        qn = connection.ops.quote_name
        sets, params = [], []
        for name, value in fields.items():
            field = concrete_field(type(self), name)
            sets.append(f"{qn(field.column)} = %s")
            params.append(field.get_db_prep_save(value, connection))
        sql = (f"UPDATE {qn(self._meta.db_table)} SET {', '.join(sets)} "
               f"WHERE {qn('id')} = %s AND {qn('status')} = %s AND {qn('worker_id')} = %s")
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, self.pk, self.Status.RUNNING.value, holder])
            return cursor.rowcount == 1

    def finish(
        self, *, worker_id: str, audio_path: str, generation_time: float, external_id: str | None = None,
        savepoint: bool = True,
    ) -> bool:
        """The song was generated: job done, song completed, together. False if the lease was lost.

        `savepoint=False` inside a caller's transaction: cheaper, but an error spoils that
        transaction.
        """
        now = timezone.now()
        with transaction.atomic(savepoint=savepoint):
            if not self._update_held(
                worker_id, status=self.Status.DONE, completed_at=now, lease_expires_at=None, error_message=""
            ):
                return False
            self.song.mark_completed(audio_file_path=audio_path, generation_time=generation_time,
                                     suno_song_id=external_id)
        self.status, self.completed_at, self.lease_expires_at, self.error_message = self.Status.DONE, now, None, ""
        return True

    def fail_attempt(self, *, worker_id: str, error: str, savepoint: bool = True) -> bool:
        """This attempt failed: retry after a backoff, or fail job and song after max_retries.

        False if the lease was lost (another worker owns the job now; nothing is changed).
        """
        now = timezone.now()
        error = error[:10_000]
        with transaction.atomic(savepoint=savepoint):
            if self.retry_count < self.max_retries:
                fields = {
                    "status": self.Status.QUEUED, "retry_count": self.retry_count + 1, "error_message": error,
                    "next_attempt_at": now + retry_delay(self.retry_count + 1), "worker_id": None,
                    "lease_expires_at": None,
                }
                if not self._update_held(worker_id, **fields):
                    return False
                self.song.mark_pending()
            else:
                fields = {"status": self.Status.FAILED, "error_message": error, "completed_at": now,
                          "lease_expires_at": None}
                if not self._update_held(worker_id, **fields):
                    return False
                self.song.mark_failed()
        for name, value in fields.items():
            setattr(self, name, value)
        return True

    def release(self, *, worker_id: str) -> bool:
        """Give an unfinished job back to the queue untouched (the worker stops); not an attempt."""
        with transaction.atomic():
            fields = {"status": self.Status.QUEUED, "worker_id": None, "lease_expires_at": None, "started_at": None}
            if not self._update_held(worker_id, **fields):
                return False
            self.song.mark_pending()
        for name, value in fields.items():
            setattr(self, name, value)
        return True

    def _reclaim(self, now: datetime) -> int:
        """The lease expired (its worker died): requeue at once, the crashed attempt counted."""
        expired = GenerationQueue.objects.expired(now).filter(pk=self.pk, worker_id=self.worker_id)
        error = f"Lease expired: worker {self.worker_id or '(unknown)'} stopped renewing it."
        if self.retry_count < self.max_retries:
            # No backoff: a crash says little about the job, and retry_count still bounds a job that
            # keeps killing its workers.
            updated = expired.update(status=self.Status.QUEUED, retry_count=F("retry_count") + 1,
                                     error_message=error, next_attempt_at=None, worker_id=None,
                                     lease_expires_at=None)
            if updated:
                self.song.mark_pending()
        else:
            updated = expired.update(status=self.Status.FAILED, error_message=error, completed_at=now,
                                     lease_expires_at=None)
            if updated:
                self.song.mark_failed()
        return updated
