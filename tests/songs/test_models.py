"""Song rules enforced by the database itself, not only by Python."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from queueing.models import GenerationQueue
from songs.models import Song, validate_media_path
from songs.services import SongRequest, song_request, song_requests
from tests.factories import make_song, make_user

pytestmark = pytest.mark.django_db


def _violates(**changes) -> None:
    song = make_song()
    with pytest.raises(IntegrityError), transaction.atomic():
        # .update() skips Python validation: only the database stands in the way.
        Song.objects.filter(pk=song.pk).update(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "bogus"},
        {"play_count": -1},
        {"generation_time": -0.5},
        {"status": "completed"},  # completed without completed_at
        {"completed_at": timezone.now() - timedelta(days=400)},  # before created_at
        {"audio_file_path": "/etc/passwd"},
        {"audio_file_path": "../outside.wav"},
        {"video_file_path": "songs/../../outside.mp4"},
        {"video_file_path": "songs/.."},
    ],
)
def test_database_rejects_invalid_song(changes):
    _violates(**changes)


def test_suno_id_unique_when_present_many_absent():
    a, b, c = make_song(), make_song(), make_song()
    Song.objects.filter(pk=a.pk).update(suno_song_id="ext-1")
    assert Song.objects.filter(suno_song_id__isnull=True).count() == 2  # NULLs never collide
    with pytest.raises(IntegrityError), transaction.atomic():
        Song.objects.filter(pk=b.pk).update(suno_song_id="ext-1")
    Song.objects.filter(pk=c.pk).update(suno_song_id="ext-2")


@pytest.mark.parametrize("bad", ["/abs/x.wav", "../x.wav", "a/../../x.wav", "a\\b.wav", ".."])
def test_media_path_validator_rejects_escapes(bad):
    with pytest.raises(ValidationError):
        validate_media_path(bad)


@pytest.mark.parametrize("good", ["", "songs/1.wav", "a/b/c.mp4", "x..y.wav"])
def test_media_path_validator_accepts_relative(good):
    validate_media_path(good)


def test_transitions_keep_constraints():
    song = make_song()
    song.mark_generating()
    song.mark_completed(audio_file_path="songs/1.wav", generation_time=3.5, suno_song_id="s-1")
    song.refresh_from_db()
    assert song.status == Song.Status.COMPLETED
    assert song.completed_at >= song.created_at
    assert song.audio_file_path == "songs/1.wav"
    with pytest.raises(ValidationError):
        song.mark_completed(audio_file_path="../evil.wav", generation_time=1)


def test_batch_completion_validates_every_path_before_writing():
    good, bad = make_song(), make_song()
    with pytest.raises(ValidationError):
        Song.objects.prepare_completions([(good, "songs/good.wav", 1.0, None), (bad, "/etc/passwd", 1.0, None)]).run()
    assert set(Song.objects.values_list("status", "audio_file_path")) == {("pending", "")}


def test_batch_completion_keeps_an_existing_external_id():
    song = make_song()
    Song.objects.filter(pk=song.pk).update(suno_song_id="kept")
    song.refresh_from_db()
    Song.objects.prepare_completions([(song, "songs/a.wav", -1.0, None)]).run()
    song.refresh_from_db()
    assert (song.status, song.suno_song_id, song.generation_time) == ("completed", "kept", 0.0)


def test_song_request_creates_song_and_queued_job():
    user = make_user()
    song = song_request(user=user, title="Night drive", genre="electronic", lyrics="la", priority=5)
    job = GenerationQueue.objects.get(song=song)
    assert song.status == Song.Status.PENDING
    assert (job.status, job.priority, job.retry_count, job.max_retries) == ("queued", 5, 0, 3)


def test_song_request_validates_before_writing():
    user = make_user()
    with pytest.raises(ValidationError):
        song_request(user=user, title="x" * 201, genre="pop")
    assert not Song.objects.exists() and not GenerationQueue.objects.exists()


def test_song_request_is_one_transaction():
    user = make_user()
    with pytest.raises(ValidationError):
        song_request(user=user, title="ok", genre="pop", priority="not a number")
    # the song was not left behind without its job
    assert not Song.objects.exists()


def test_song_requests_in_a_batch():
    user, other = make_user(), make_user()
    requests = [SongRequest(user if i % 2 else other, f"Batch {i}", "jazz", priority=i % 3) for i in range(120)]
    songs = song_requests(requests)
    assert [s.title for s in songs] == [r.title for r in requests]
    assert all(s.pk for s in songs)
    stored = {s.pk: s for s in Song.objects.filter(pk__in=[s.pk for s in songs])}
    assert all((s.status, s.analytics_data) == ("pending", {}) for s in stored.values())
    assert [stored[s.pk].user_id for s in songs] == [r.user.pk for r in requests]
    jobs = {j.song_id: j for j in GenerationQueue.objects.filter(song__in=songs)}
    assert [(jobs[s.pk].status, jobs[s.pk].priority) for s in songs] == [("queued", r.priority) for r in requests]
    assert song_requests([]) == []


def test_song_requests_validate_every_request_before_writing():
    user = make_user()
    requests = [SongRequest(user, "fine", "pop"), SongRequest(user, "also fine", "pop"),
                SongRequest(user, "x" * 201, "pop")]
    with pytest.raises(ValidationError) as caught:
        song_requests(requests)
    assert "title" in caught.value.message_dict
    assert any("song request 3 of 3" in note for note in caught.value.__notes__)
    assert not Song.objects.exists() and not GenerationQueue.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_song_requests_are_one_transaction():
    """A database error on one request (its user was deleted meanwhile) leaves no song of the batch."""
    user, gone = make_user(), make_user()
    User = type(gone)
    User.objects.filter(pk=gone.pk).delete()
    with pytest.raises(IntegrityError):
        song_requests([SongRequest(user, "kept?", "pop"), SongRequest(gone, "orphan", "pop")])
    assert not Song.objects.exists() and not GenerationQueue.objects.exists()


def test_queryset_names():
    user, other = make_user(), make_user()
    s1 = make_song(user=user)
    s2 = make_song(user=user)
    make_song(user=other)
    s2.mark_generating()
    assert list(Song.objects.for_user(user).with_status("pending")) == [s1]
    assert list(Song.objects.pending().filter(user=user)) == [s1]
    assert list(Song.objects.newest().filter(user=user)) == [s2, s1]
    assert str(s1) == f"{s1.title} (Pending)"
