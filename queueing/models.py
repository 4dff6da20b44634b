"""The generation queue: one row per attempt-series of generating one song.

`queueing` knows a song only through `job.song` and the song's own transitions (`mark_pending`,
`mark_generating`, `mark_completed`, `mark_failed`), so it could serve another kind of job.
"""

from __future__ import annotations

from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.utils import timezone

# The order in which workers take jobs: highest priority first, then oldest, then by id so the
# order is total. Kept in one place; the partial index queue_claim follows it column for column.
CLAIM_ORDER = ("-priority", "queued_at", "id")


class TransitionError(Exception):
    """A job is not in a state that allows the requested transition."""


class GenerationQueueQuerySet(models.QuerySet["GenerationQueue"]):
    """Named filters over the queue."""

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

    def in_claim_order(self) -> GenerationQueueQuerySet:
        """The order workers take jobs in (served by queue_claim for queued rows)."""
        return self.order_by(*CLAIM_ORDER)

    def next_job(self) -> GenerationQueueQuerySet:
        """The worker's next-job query: queued jobs in claim order (partial index queue_claim)."""
        return self.queued().in_claim_order()


class GenerationQueue(models.Model):
    """A song's generation job: queued, then taken by a worker, then done or failed."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"  # waiting for a worker
        RUNNING = "running", "Running"  # a worker holds it
        DONE = "done", "Done"  # the song was generated
        FAILED = "failed", "Failed"  # gave up after max_retries; error_message says why
        CANCELLED = "cancelled", "Cancelled"  # withdrawn by an operator before a worker took it

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    song = models.ForeignKey("songs.Song", on_delete=models.CASCADE, related_name="queue_entries")
    priority = models.IntegerField(default=0, help_text="Higher runs first.")
    retry_count = models.IntegerField(default=0, help_text="Attempts that failed so far.")
    max_retries = models.IntegerField(default=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    error_message = models.TextField(blank=True, default="")
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = GenerationQueueQuerySet.as_manager()

    class Meta:
        verbose_name = "generation queue entry"
        verbose_name_plural = "generation queue"
        indexes = [
            # The worker's next-job query (GenerationQueueQuerySet.next_job): queued rows only, in
            # claim order, so the claim reads the first entry and never sorts.
            models.Index(
                F("priority").desc(), F("queued_at"), F("id"),
                name="queue_claim", condition=Q(status="queued"),
            ),
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
        """Put a failed job back in the queue, with a fresh set of attempts; its song follows."""
        try:
            with transaction.atomic():
                updated = GenerationQueue.objects.filter(pk=self.pk, status=self.Status.FAILED).update(
                    status=self.Status.QUEUED, retry_count=0, error_message="",
                    queued_at=timezone.now(), started_at=None, completed_at=None,
                )
                if not updated:
                    raise TransitionError(f"Job {self.pk} is not failed; only failed jobs can be retried.")
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


def hot_query_next_job() -> GenerationQueueQuerySet:
    """The worker's next-job query, by name for `manage.py dbcheck` (queue_claim)."""
    return GenerationQueue.objects.next_job()[:1]
