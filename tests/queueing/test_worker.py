"""The worker in this process, on the real database: order, retries, backoff, leases, query counts."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from queueing.generators import GenerationResult
from queueing.models import GenerationQueue, retry_delay
from queueing.worker import Heartbeat, Worker
from songs.models import Song
from tests.factories import make_song
from tests.queueing.generators import FailingGenerator

pytestmark = pytest.mark.django_db

LEASE = 30.0


class ListGenerator:
    """Remembers the songs it generated, in order; fails the first `fail` calls."""

    def __init__(self, fail: int = 0) -> None:
        self.songs: list[int] = []
        self.fail = fail

    def generate(self, song) -> GenerationResult:
        self.songs.append(song.pk)
        if len(self.songs) <= self.fail:
            raise RuntimeError(f"attempt {len(self.songs)} failed")
        return GenerationResult(audio_path=f"songs/{song.pk}.wav", duration=2.0, external_id=f"ext-{song.pk}")


def worker(generator, **kwargs) -> Worker:
    kwargs.setdefault("burst", True)
    return Worker(generator=generator, own_process=False, log=lambda message: None, lease_seconds=LEASE, **kwargs)


def set_queued_at(song: Song, when) -> None:
    GenerationQueue.objects.filter(song=song).update(queued_at=when)


def test_priorities_then_oldest_first():
    now = timezone.now()
    low_old, high_new, low_new, high_old = (make_song(priority=p) for p in (0, 9, 0, 9))
    for song, age in ((low_old, 40), (high_new, 10), (low_new, 5), (high_old, 30)):
        set_queued_at(song, now - timedelta(seconds=age))
    gen = ListGenerator()
    assert worker(gen, batch=1).run() == 4
    assert gen.songs == [high_old.pk, high_new.pk, low_old.pk, low_new.pk]


def test_batch_claim_keeps_the_order():
    songs = [make_song(priority=i % 3) for i in range(12)]
    expected = [j.song_id for j in GenerationQueue.objects.next_job()]
    gen = ListGenerator()
    assert worker(gen, batch=16).run() == 12
    assert gen.songs == expected and sorted(expected) == sorted(s.pk for s in songs)


def test_success_completes_job_and_song_together():
    song = make_song()
    worker(ListGenerator()).run()
    job = song.queue_entries.get()
    song.refresh_from_db()
    assert (job.status, job.retry_count, job.lease_expires_at) == ("done", 0, None)
    assert job.started_at and job.completed_at and job.worker_id
    assert (song.status, song.audio_file_path, song.suno_song_id) == ("completed", f"songs/{song.pk}.wav",
                                                                      f"ext-{song.pk}")
    assert song.generation_time is not None and song.completed_at


def test_failed_attempt_is_retried_after_a_backoff(settings):
    settings.SONGSGEN_RETRY_BACKOFF_SECONDS = 30
    song = make_song()
    gen = ListGenerator(fail=1)
    before = timezone.now()
    assert worker(gen).run() == 1  # burst: the job waits out its backoff, so the worker leaves
    job = song.queue_entries.get()
    assert (job.status, job.retry_count, job.worker_id) == ("queued", 1, None)
    assert "RuntimeError: attempt 1 failed" in job.error_message
    assert Song.objects.get(pk=song.pk).status == "pending"
    # the delay is honoured: 30 s nominal, jittered into [15, 30]
    assert before + timedelta(seconds=15) <= job.next_attempt_at <= timezone.now() + timedelta(seconds=30)
    assert GenerationQueue.objects.claim(worker_id="w", lease_seconds=LEASE) == []
    assert not GenerationQueue.objects.claim(worker_id="w", lease_seconds=LEASE,
                                             now=job.next_attempt_at - timedelta(milliseconds=1))
    claimed = GenerationQueue.objects.claim(worker_id="w", lease_seconds=LEASE, now=job.next_attempt_at)
    assert [j.pk for j in claimed] == [job.pk]


def test_backoff_grows_exponentially_with_jitter_and_a_cap(settings):
    settings.SONGSGEN_RETRY_BACKOFF_SECONDS = 10
    settings.SONGSGEN_RETRY_BACKOFF_MAX_SECONDS = 60
    for attempt, nominal in ((1, 10), (2, 20), (3, 40), (4, 60), (9, 60)):
        delays = {retry_delay(attempt).total_seconds() for _ in range(50)}
        assert all(nominal / 2 <= d <= nominal for d in delays), (attempt, delays)
        assert len(delays) > 1  # jittered


def test_always_failing_job_ends_failed_after_max_retries(settings):
    settings.SONGSGEN_RETRY_BACKOFF_SECONDS = 0
    song = make_song()
    GenerationQueue.objects.filter(song=song).update(max_retries=2)
    calls = []

    class Counting(FailingGenerator):
        def generate(self, song):
            calls.append(song.pk)
            return super().generate(song)

    worker(Counting()).run()
    job = song.queue_entries.get()
    assert len(calls) == 3  # the first attempt and two retries
    assert (job.status, job.retry_count) == ("failed", 2)
    assert "the generator is down" in job.error_message and job.completed_at
    assert Song.objects.get(pk=song.pk).status == "failed"


def test_result_with_an_escaping_path_fails_the_attempt(settings):
    settings.SONGSGEN_RETRY_BACKOFF_SECONDS = 0

    class Escaping:
        def generate(self, song):
            return GenerationResult(audio_path="../outside.wav", duration=1.0)

    song = make_song()
    GenerationQueue.objects.filter(song=song).update(max_retries=0)
    worker(Escaping()).run()
    job = song.queue_entries.get()
    assert job.status == "failed" and "media root" in job.error_message
    assert Song.objects.get(pk=song.pk).audio_file_path == ""


def test_one_unrecordable_outcome_does_not_spoil_its_batch(settings):
    settings.SONGSGEN_RETRY_BACKOFF_SECONDS = 30
    first, second, third = make_song(), make_song(), make_song()

    class SameExternalId:
        def generate(self, song):
            return GenerationResult(audio_path=f"songs/{song.pk}.wav", duration=1.0,
                                    external_id="taken" if song.pk == second.pk else None)

    Song.objects.filter(pk=first.pk).update(suno_song_id="taken")  # the id belongs to another song already
    w = worker(SameExternalId(), batch=3)
    w.batch_size = 3
    assert w.run_once() == 3
    jobs = {job.song_id: job for job in GenerationQueue.objects.all()}
    assert (jobs[first.pk].status, jobs[third.pk].status) == ("done", "done")
    assert (jobs[second.pk].status, jobs[second.pk].retry_count) == ("queued", 1)
    assert "IntegrityError" in jobs[second.pk].error_message
    assert Song.objects.get(pk=second.pk).status == "pending"


def test_expired_lease_is_reclaimed_and_counts_the_crashed_attempt():
    song = make_song()
    [job] = GenerationQueue.objects.claim(worker_id="dead", lease_seconds=LEASE)
    assert Song.objects.get(pk=song.pk).status == "generating"
    assert GenerationQueue.objects.reclaim_expired() == 0  # lease still running
    later = timezone.now() + timedelta(seconds=LEASE + 1)
    assert GenerationQueue.objects.reclaim_expired(now=later) == 1
    job.refresh_from_db()
    assert (job.status, job.retry_count, job.worker_id, job.lease_expires_at) == ("queued", 1, None, None)
    assert "Lease expired: worker dead" in job.error_message
    assert Song.objects.get(pk=song.pk).status == "pending"
    # the dead worker's late outcome is discarded: it no longer holds the job
    assert job.finish(worker_id="dead", audio_path="a.wav", generation_time=1.0) is False
    job.refresh_from_db()
    assert job.status == "queued"


def test_expired_lease_out_of_retries_fails_job_and_song():
    song = make_song()
    GenerationQueue.objects.filter(song=song).update(max_retries=1, retry_count=1)
    GenerationQueue.objects.claim(worker_id="dead", lease_seconds=LEASE)
    assert GenerationQueue.objects.reclaim_expired(now=timezone.now() + timedelta(seconds=LEASE + 1)) == 1
    job = song.queue_entries.get()
    assert (job.status, job.retry_count) == ("failed", 1)
    assert Song.objects.get(pk=song.pk).status == "failed"


def test_heartbeat_renews_the_lease_of_held_jobs():
    make_song()
    [job] = GenerationQueue.objects.claim(worker_id="me", lease_seconds=1)
    first = job.lease_expires_at
    assert GenerationQueue.objects.renew_leases(worker_id="other", ids=[job.pk], lease_seconds=LEASE) == 0
    assert GenerationQueue.objects.renew_leases(worker_id="me", ids=[job.pk], lease_seconds=LEASE) == 1
    job.refresh_from_db()
    assert job.lease_expires_at > first + timedelta(seconds=LEASE - 2)


def test_stopping_worker_releases_unstarted_jobs_of_its_batch():
    songs = [make_song() for _ in range(4)]

    class StopAfterFirst(ListGenerator):
        def generate(self, song):
            result = super().generate(song)
            w.stop()
            return result

    w = worker(StopAfterFirst(), batch=4, burst=False)
    w.batch_size = 4
    assert w.run() == 1
    statuses = sorted(GenerationQueue.objects.values_list("status", flat=True))
    assert statuses == ["done", "queued", "queued", "queued"]
    assert sorted(Song.objects.filter(pk__in=[s.pk for s in songs]).values_list("status", flat=True)) == [
        "completed", "pending", "pending", "pending"]
    assert set(GenerationQueue.objects.filter(status="queued").values_list("retry_count", flat=True)) == {0}


def test_max_jobs_stops_the_worker():
    for _ in range(5):
        make_song()
    assert worker(ListGenerator(), max_jobs=2, batch=16).run() == 2
    assert GenerationQueue.objects.filter(status="queued").count() == 3


# Query counts on the hot path. Inside the test's transaction each atomic block opens with a
# SAVEPOINT and closes with a RELEASE (in a worker: BEGIN and COMMIT); BEGIN counts the opening one.
BEGIN = 1


def test_claim_query_count(django_assert_num_queries):
    for _ in range(3):
        make_song()
    # [BEGIN] UPDATE … RETURNING, SELECT jobs with their songs, one UPDATE of the songs, COMMIT:
    # the same for one job as for a batch
    with django_assert_num_queries(BEGIN + 1 + 1 + 1 + 1):
        GenerationQueue.objects.claim(worker_id="w", lease_seconds=LEASE, limit=1)
    with django_assert_num_queries(BEGIN + 1 + 1 + 1 + 1):
        claimed = GenerationQueue.objects.claim(worker_id="w", lease_seconds=LEASE, limit=2)
    assert len(claimed) == 2 and {j.song.status for j in claimed} == {"generating"}
    assert set(Song.objects.values_list("status", flat=True)) == {"generating"}
    # nothing left: [BEGIN] UPDATE, COMMIT
    with django_assert_num_queries(BEGIN + 1 + 1):
        assert GenerationQueue.objects.claim(worker_id="w", lease_seconds=LEASE) == []


def test_finish_query_count(django_assert_num_queries):
    make_song()
    [job] = GenerationQueue.objects.claim(worker_id="w", lease_seconds=LEASE)
    # [BEGIN] UPDATE job, UPDATE song, COMMIT
    with django_assert_num_queries(BEGIN + 3):
        assert job.finish(worker_id="w", audio_path="songs/x.wav", generation_time=0.5)


def test_worker_turn_query_count(django_assert_num_queries):
    for _ in range(4):
        make_song()
    w = worker(ListGenerator(), batch=4)
    w.batch_size = 4
    # claim: [BEGIN] UPDATE, SELECT, UPDATE songs, COMMIT; then one transaction for the four
    # outcomes: [BEGIN], one UPDATE of the jobs, one prepared UPDATE run for each song, COMMIT
    with django_assert_num_queries(BEGIN + 4 + BEGIN + 2 + 1):
        assert w.run_once() == 4
    assert set(GenerationQueue.objects.values_list("status", flat=True)) == {"done"}
    assert set(Song.objects.values_list("status", flat=True)) == {"completed"}


def test_batch_finish_skips_jobs_whose_lease_was_lost():
    songs = [make_song() for _ in range(3)]
    jobs = GenerationQueue.objects.claim(worker_id="w", lease_seconds=LEASE, limit=3)
    lost = jobs[1]
    # its lease expired and another worker took it over
    GenerationQueue.objects.filter(pk=lost.pk).update(worker_id="other")
    finished = GenerationQueue.objects.finish_held(
        worker_id="w", finished=[(job, f"songs/{job.song_id}.wav", 1.5, f"ext-{job.song_id}") for job in jobs])
    assert sorted(job.pk for job in finished) == sorted([jobs[0].pk, jobs[2].pk])
    by_song = {song.pk: song for song in Song.objects.filter(pk__in=[s.pk for s in songs])}
    for job in (jobs[0], jobs[2]):
        song = by_song[job.song_id]
        assert (song.status, song.audio_file_path, song.generation_time, song.suno_song_id) == (
            "completed", f"songs/{job.song_id}.wav", 1.5, f"ext-{job.song_id}")
        assert song.completed_at >= song.created_at
        job.refresh_from_db()
        assert (job.status, job.lease_expires_at) == ("done", None)
    lost.refresh_from_db()
    assert (lost.status, lost.worker_id) == ("running", "other")
    assert by_song[lost.song_id].status == "generating"


# --- results checked against the song's fields before the finishing transaction -----------------
@pytest.mark.parametrize(
    "result, message",
    [
        (GenerationResult(audio_path="songs/" + "p" * 5000 + ".wav", duration=1.0),
         "does not fit Song.audio_file_path: Ensure this value has at most 500 characters (it has 5010)."),
        (GenerationResult(audio_path="songs/ok.wav", duration=1.0, external_id="x" * 5010),
         "does not fit Song.suno_song_id: Ensure this value has at most 100 characters (it has 5010)."),
        (GenerationResult(audio_path="songs/ok.wav", duration=1.0, external_id="a\x00b"), "without NUL characters"),
        (GenerationResult(audio_path=42, duration=1.0), "GenerationResult.audio_path must be text"),  # type: ignore[arg-type]
        ({"audio_path": "songs/ok.wav"}, "not a GenerationResult"),
    ],
)
def test_result_the_song_cannot_store_fails_the_attempt_and_nothing_is_stored(settings, result, message):
    settings.SONGSGEN_RETRY_BACKOFF_SECONDS = 30
    bad, good = make_song(priority=1), make_song()

    class Returns:
        def generate(self, song):
            return result if song.pk == bad.pk else GenerationResult(audio_path=f"songs/{song.pk}.wav", duration=1.0)

    w = worker(Returns(), batch=2)
    w.batch_size = 2
    assert w.run_once() == 2
    job = bad.queue_entries.get()
    assert (job.status, job.retry_count) == ("queued", 1)  # a failed attempt, retried after its backoff
    assert message in job.error_message
    song = Song.objects.get(pk=bad.pk)
    assert (song.status, song.audio_file_path, song.suno_song_id) == ("pending", "", None)
    assert good.queue_entries.get().status == "done"  # the rest of the batch is recorded as usual
    assert Song.objects.get(pk=good.pk).audio_file_path == f"songs/{good.pk}.wav"


# --- an outcome that cannot be recorded says why ---------------------------------------------------
def test_song_deleted_while_generating_is_reported_as_deleted(caplog):
    song = make_song()

    class DeletesItsSong(ListGenerator):
        def generate(self, song):
            Song.objects.filter(pk=song.pk).delete()  # an operator deletes the song meanwhile
            return super().generate(song)

    worker(DeletesItsSong()).run()
    assert f"its song {song.pk} was deleted while it was generating" in caplog.text
    assert "another worker" not in caplog.text
    assert not GenerationQueue.objects.exists()


@pytest.mark.parametrize("fails", [False, True])
def test_job_row_restored_from_a_backup_is_reported_as_a_restore(caplog, fails):
    song = make_song()
    before_claim = GenerationQueue.objects.values().get(song=song)

    class RestoredMeanwhile(ListGenerator):
        def generate(self, song):
            # dbrestore puts back the row as the backup had it: queued, no worker.
            GenerationQueue.objects.filter(pk=before_claim["id"]).update(
                **{k: v for k, v in before_claim.items() if k != "id"})
            return super().generate(song)

    worker(RestoredMeanwhile(fail=1 if fails else 0), max_jobs=1).run()
    job = song.queue_entries.get()
    assert "no longer held by this worker (it is queued, held by no worker): the database was restored" in caplog.text
    assert (job.status, job.retry_count, job.error_message) == ("queued", 0, "")


def test_job_reclaimed_after_its_lease_expired_is_reported_as_reclaimed(caplog):
    song = make_song()

    class OutlivesItsLease(ListGenerator):
        def generate(self, song):
            GenerationQueue.objects.reclaim_expired(now=timezone.now() + timedelta(seconds=LEASE + 1))
            return super().generate(song)

    worker(OutlivesItsLease(), burst=True, max_jobs=1).run()
    assert "this worker's lease expired and the job was reclaimed (it is queued now)" in caplog.text
    job = song.queue_entries.get()
    assert (job.status, job.retry_count) == ("queued", 1)


def test_heartbeat_stops_renewing_a_job_past_its_generation_deadline():
    beat = Heartbeat(worker_id="w", lease_seconds=LEASE, interval=LEASE / 3)
    beat.hold([1, 2, 3])
    beat.generating(1, time.monotonic() - 0.1)  # its generation ran out of time: the worker may be stuck
    beat.generating(2, time.monotonic() + 60)
    assert beat.held() == [2, 3]
