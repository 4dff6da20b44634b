"""Queue rules in the database, operator transitions, and the plan of the worker's next-job query."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from queueing.models import GenerationQueue, TransitionError
from songs.models import Song
from tests.factories import make_song

pytestmark = pytest.mark.django_db


def test_at_most_one_active_job_per_song():
    song = make_song()
    with pytest.raises(IntegrityError), transaction.atomic():
        GenerationQueue.objects.create(song=song, status="running")
    # finished entries may pile up beside the active one
    GenerationQueue.objects.create(song=song, status="failed", retry_count=3)
    GenerationQueue.objects.create(song=song, status="done")


@pytest.mark.parametrize("changes", [{"retry_count": -1}, {"retry_count": 4}, {"status": "lost"}])
def test_database_rejects_invalid_job(changes):
    job = make_song().queue_entries.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        GenerationQueue.objects.filter(pk=job.pk).update(**changes)


def test_cancel_queued_job_fails_its_song():
    job = make_song().queue_entries.get()
    job.cancel()
    job.refresh_from_db()
    assert job.status == "cancelled" and job.completed_at
    assert job.song.status == Song.Status.FAILED
    with pytest.raises(TransitionError, match="only queued jobs"):
        job.cancel()


def test_retry_failed_job_requeues_song():
    song = make_song()
    job = song.queue_entries.get()
    GenerationQueue.objects.filter(pk=job.pk).update(status="failed", retry_count=3, error_message="boom")
    Song.objects.filter(pk=song.pk).update(status="failed")
    job.refresh_from_db()
    job.retry()
    job.refresh_from_db()
    song.refresh_from_db()
    assert (job.status, job.retry_count, job.error_message) == ("queued", 0, "")
    assert song.status == Song.Status.PENDING
    with pytest.raises(TransitionError, match="neither failed nor cancelled"):
        job.retry()


def test_retry_undoes_a_cancel():
    """Cancel is not a dead end: Retry puts the job and its song back where they were."""
    job = make_song().queue_entries.get()
    job.cancel()
    job.retry()
    job.refresh_from_db()
    assert (job.status, job.completed_at, job.error_message) == ("queued", None, "")
    assert job.song.status == Song.Status.PENDING


def test_retry_refused_when_song_already_has_active_job():
    song = make_song()
    old = GenerationQueue.objects.create(song=song, status="failed", retry_count=3)
    with pytest.raises(TransitionError, match="already has a queued or running job"):
        old.retry()
    old.refresh_from_db()
    assert old.status == "failed"


def test_next_job_order_priority_then_oldest():
    now = timezone.now()
    low_old = make_song(priority=0).queue_entries.get()
    high_new = make_song(priority=9).queue_entries.get()
    low_new = make_song(priority=0).queue_entries.get()
    GenerationQueue.objects.filter(pk=low_old.pk).update(queued_at=now - timedelta(hours=1))
    GenerationQueue.objects.filter(pk=low_new.pk).update(queued_at=now)
    GenerationQueue.objects.filter(pk=high_new.pk).update(queued_at=now + timedelta(seconds=1))
    assert list(GenerationQueue.objects.next_job().values_list("pk", flat=True)) == [
        high_new.pk, low_old.pk, low_new.pk
    ]


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cur:
        if connection.vendor == "sqlite":
            cur.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return "\n".join(str(row[-1]) for row in cur.fetchall())
        # Small test tables would make any plan acceptable to PostgreSQL; forbid the
        # alternatives so the plan shows whether the index can serve the query at all.
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("SET LOCAL enable_sort = off")
        cur.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cur.fetchall())


def test_next_job_query_never_sorts():
    for _ in range(30):
        make_song()
    with transaction.atomic():
        plan = _plan(GenerationQueue.objects.next_job()[:1])
    assert "queue_claim" in plan or "queue_status_order" in plan, plan
    assert "TEMP B-TREE" not in plan.upper(), plan
    assert "Sort" not in plan, plan



@pytest.mark.parametrize("seconds", [0, -5, 86_401])
def test_job_timeout_must_be_a_positive_number_of_seconds(seconds):
    job = make_song().queue_entries.get()
    job.timeout_seconds = seconds
    with pytest.raises(ValidationError) as caught:
        job.full_clean()
    assert "timeout_seconds" in caught.value.message_dict
    if seconds < 0:  # the column's own CHECK, for writes around the model
        with pytest.raises(IntegrityError), transaction.atomic():
            GenerationQueue.objects.filter(pk=job.pk).update(timeout_seconds=seconds)


@pytest.mark.django_db(transaction=True)
def test_timeout_migration_reverses_and_reapplies_with_rows():
    with_timeout, without = make_song(), make_song()
    GenerationQueue.objects.filter(song=with_timeout).update(timeout_seconds=5, status="running", worker_id="w")
    table = GenerationQueue._meta.db_table

    def columns() -> set[str]:
        with connection.cursor() as cursor:
            return {c.name for c in connection.introspection.get_table_description(cursor, table)}

    def rows() -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, song_id, status, worker_id FROM {table} ORDER BY id")
            return cursor.fetchall()

    before = rows()
    executor = MigrationExecutor(connection)
    executor.migrate([("queueing", "0002_add_lease_and_backoff")])
    assert "timeout_seconds" not in columns()
    assert rows() == before
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes("queueing"))  # 0003 and whatever follows it
    assert "timeout_seconds" in columns()
    assert rows() == before
    assert list(GenerationQueue.objects.order_by("id").values_list("song_id", "timeout_seconds")) == [
        (with_timeout.pk, None), (without.pk, None)]
