"""seed_demo: the rows it writes obey every rule of the models, repeated runs append, bad input fails clearly."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Count, Max, Min
from django.db.models.functions import Length, Lower
from django.utils import timezone

from accounts.models import User
from queueing.models import GenerationQueue
from songs.admin import GENRES
from songs.demo import DEMO_PASSWORD, HISTORY_DAYS, Progress, SeedError, seed_demo_data
from songs.demo_audio import demo_audio_path
from songs.models import Song
from songs.services import song_request

BASE_DIR = Path(settings.BASE_DIR)
USERS, SONGS = 50, 2_000

# The queue entry each unfinished song status implies. None is generating: no worker runs yet.
JOB_STATUS_FOR = {
    Song.Status.PENDING: GenerationQueue.Status.QUEUED,
    Song.Status.FAILED: GenerationQueue.Status.FAILED,
}


def seed(*args: str) -> str:
    """Run seed_demo in-process and return what it printed."""
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed writes the demo's audio files: into a temporary folder, never the work tree's data/.

    One folder for the module: the seed renders each genre's file once and finds it there after.
    """
    settings.MEDIA_ROOT = tmp_path_factory.getbasetemp() / "seed-demo-media"
    return settings.MEDIA_ROOT


@pytest.fixture
def seeded(db: None) -> str:
    return seed("--users", str(USERS), "--songs", str(SONGS), "--batch-size", "700", "--seed", "7")


def test_counts_and_report(seeded: str) -> None:
    assert User.objects.count() == USERS
    assert Song.objects.count() == SONGS
    unfinished = Song.objects.exclude(status=Song.Status.COMPLETED).count()
    assert GenerationQueue.objects.count() == unfinished
    assert f"Added {USERS} users, {SONGS:,} songs and {unfinished} queue entries" in seeded
    # One progress line per batch of 700 songs: 700, 1,400, 2,000.
    assert "songs:        2,000 / 2,000 (100%)" in seeded
    assert seeded.count("songs:") == 3


def test_statuses_are_valid_and_realistic(seeded: str) -> None:
    counts = dict(Song.objects.values_list("status").annotate(n=Count("id")))
    # Generating means a live worker holds the job's lease: none runs while the seed does.
    assert set(counts) == set(Song.Status.values) - {Song.Status.GENERATING}
    assert 0.70 < counts[Song.Status.COMPLETED] / SONGS < 0.90
    assert 0.05 < counts[Song.Status.PENDING] / SONGS < 0.17
    assert 0.04 < counts[Song.Status.FAILED] / SONGS < 0.12
    assert set(Song.objects.values_list("genre", flat=True).distinct()) <= set(GENRES)
    assert Song.objects.values("genre").distinct().count() > len(GENRES) // 2


def test_completed_songs_have_their_results(seeded: str) -> None:
    completed = Song.objects.completed()
    assert not completed.filter(completed_at__isnull=True).exists()
    assert not completed.filter(generation_time__isnull=True).exists()
    assert not completed.filter(suno_song_id__isnull=True).exists()
    assert completed.values("suno_song_id").distinct().count() == completed.count()
    for song in completed.only("id", "audio_file_path", "created_at", "completed_at", "generation_time")[:300]:
        assert song.audio_file_path == demo_audio_path(song.genre)
        assert song.completed_at >= song.created_at
        assert song.generation_time >= 0

    unfinished = Song.objects.exclude(status=Song.Status.COMPLETED)
    assert not unfinished.filter(completed_at__isnull=False).exists()
    assert not unfinished.filter(suno_song_id__isnull=False).exists()
    assert not unfinished.exclude(audio_file_path="").exists()
    assert not Song.objects.filter(play_count__lt=0).exists()
    assert not unfinished.exclude(play_count=0).exists()


def test_every_completed_song_plays_a_wav_file_that_exists(seeded: str, media_root: Path) -> None:
    # Completed demo songs share one short WAV per genre (songs/demo_audio.py), written by the seed.
    paths = set(Song.objects.completed().values_list("audio_file_path", flat=True).distinct())
    assert paths and all(path.startswith("demo/") for path in paths)
    for path in paths:
        with wave.open(str(media_root / path)) as audio:
            assert audio.getnframes() / audio.getframerate() > 1  # seconds of real audio
    assert len(list((media_root / "demo").iterdir())) == len(GENRES)
    # A second seed renders nothing again.
    before = {path: (media_root / path).stat().st_mtime_ns for path in paths}
    seed("--users", "1", "--songs", "20", "--seed", "8")
    assert {path: (media_root / path).stat().st_mtime_ns for path in paths} == before


def test_content_is_long_and_varied(seeded: str) -> None:
    lengths = Song.objects.aggregate(shortest=Min(Length("lyrics")), longest=Max(Length("lyrics")))
    assert lengths["shortest"] >= 700
    assert lengths["longest"] <= 2_500
    assert Song.objects.values("lyrics").distinct().count() == SONGS
    assert Song.objects.values("title").distinct().count() > 500
    assert not Song.objects.filter(style_prompt="").exists()


def test_times_spread_over_two_years_in_utc(seeded: str) -> None:
    now = timezone.now()
    span = Song.objects.aggregate(first=Min("created_at"), last=Max("created_at"))
    assert span["first"].utcoffset() == timedelta(0)
    assert now - timedelta(days=HISTORY_DAYS + 1) <= span["first"] < now - timedelta(days=HISTORY_DAYS - 30)
    assert now - timedelta(days=30) < span["last"] <= now
    # Ids rise with creation time, as in a live table, and no song predates its owner's sign-up.
    newest_ids = list(Song.objects.order_by("-created_at").values_list("id", flat=True)[:5])
    assert newest_ids == sorted(newest_ids, reverse=True)
    for song in Song.objects.select_related("user").order_by("?")[:200]:
        assert song.user.created_at <= song.created_at


def test_queue_entries_exactly_for_unfinished_songs(seeded: str) -> None:
    assert not GenerationQueue.objects.filter(song__status=Song.Status.COMPLETED).exists()
    per_song = GenerationQueue.objects.values("song").annotate(n=Count("id")).filter(n__gt=1)
    assert not per_song.exists()
    for song_status, job_status in JOB_STATUS_FOR.items():
        songs = Song.objects.filter(status=song_status)
        jobs = GenerationQueue.objects.filter(song__status=song_status)
        assert jobs.count() == songs.count()
        assert set(jobs.values_list("status", flat=True).distinct()) == {job_status}

    assert not GenerationQueue.objects.running().exists()
    failed = GenerationQueue.objects.failed()
    assert failed.exists()
    for job in failed:
        assert job.retry_count == job.max_retries
        assert job.error_message
        assert job.started_at is not None and job.completed_at is not None
        assert job.queued_at <= job.started_at <= job.completed_at
    queued = GenerationQueue.objects.queued()
    assert not queued.filter(started_at__isnull=False).exists()
    assert not queued.filter(completed_at__isnull=False).exists()


def test_users_are_unique_and_can_log_in(seeded: str) -> None:
    emails = list(User.objects.values_list("email", flat=True))
    assert len(set(emails)) == len(emails) == USERS
    assert all(email == email.lower() and "@" in email for email in emails)
    assert User.objects.annotate(lower=Lower("email")).values("lower").distinct().count() == USERS
    assert User.objects.values("username").distinct().count() == USERS
    # One hash computed once and shared: every demo account takes the same password.
    assert User.objects.values("password").distinct().count() == 1
    user = User.objects.order_by("?").first()
    assert user is not None and user.check_password(DEMO_PASSWORD)
    assert not User.objects.filter(is_staff=True).exists()
    assert not User.objects.filter(is_superuser=True).exists()


def test_rows_pass_model_validation(seeded: str) -> None:
    for song in Song.objects.order_by("?")[:100]:
        song.full_clean()
    for job in GenerationQueue.objects.order_by("?")[:100]:
        job.full_clean(validate_constraints=False)  # the active-job constraint is the database's
    for user in User.objects.all()[:20]:
        user.full_clean()


@pytest.mark.django_db(transaction=True)
def test_second_run_appends_without_collisions() -> None:
    seed("--users", "30", "--songs", "500", "--seed", "1")
    first_max = {model: model.objects.aggregate(top=Max("id"))["top"] for model in (User, Song, GenerationQueue)}
    first_usernames = set(User.objects.values_list("username", flat=True))
    # The same seed again: the same content, but fresh ids, usernames, emails and external ids.
    seed("--users", "30", "--songs", "500", "--seed", "1")
    assert User.objects.count() == 60
    assert Song.objects.count() == 1_000
    assert GenerationQueue.objects.count() == Song.objects.exclude(status=Song.Status.COMPLETED).count()
    for model, top in first_max.items():
        assert model.objects.filter(id__gt=top).exists()
    assert User.objects.values("username").distinct().count() == 60
    assert User.objects.values("email").distinct().count() == 60
    assert not first_usernames & set(User.objects.filter(id__gt=first_max[User]).values_list("username", flat=True))
    # Songs of the second run belong to users of the second run.
    assert not Song.objects.filter(id__gt=first_max[Song], user_id__lte=first_max[User]).exists()

    # The ORM's own inserts carry on after the seeded ids (PostgreSQL's sequences were moved on).
    user = User.objects.order_by("id").last()
    assert user is not None
    song = song_request(user=user, title="After the seed", genre="pop")
    assert song.pk > Song.objects.exclude(pk=song.pk).aggregate(top=Max("id"))["top"]
    assert song.queue_entries.get().pk > first_max[GenerationQueue]


@pytest.mark.django_db(transaction=True)
def test_sqlite_pragma_restored() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    seed("--users", "2", "--songs", "10")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 1  # NORMAL, as songsgen.db.sqlite sets it


def test_seed_function_reports_progress(db: None) -> None:
    """The function behind the command, as `make run` calls it for a small demo set."""
    seen: list[Progress] = []
    result = seed_demo_data(users=3, songs=25, batch_size=10, seed=5, progress=seen.append)
    assert (result.users, result.songs) == (3, 25)
    assert result.queue_entries == GenerationQueue.objects.count()
    assert [(p.phase, p.done, p.total) for p in seen] == [
        ("users", 3, 3), ("songs", 10, 25), ("songs", 20, 25), ("songs", 25, 25),
    ]
    assert all(a.elapsed <= b.elapsed for a, b in zip(seen, seen[1:], strict=False))
    assert User.objects.filter(username__contains=result.token).count() == 3
    with pytest.raises(SeedError, match="cannot be negative"):
        seed_demo_data(users=-1, songs=0)


def test_songs_for_existing_users(db: None) -> None:
    seed("--users", "5", "--songs", "0")
    out = seed("--songs", "100")
    assert "Added 0 users, 100 songs" in out
    assert User.objects.count() == 5
    assert Song.objects.values("user").distinct().count() > 1


def test_songs_without_any_user_fail(db: None) -> None:
    with pytest.raises(CommandError, match=r"no users yet, so seed some users too \(--users N\)"):
        seed("--songs", "10")
    assert not Song.objects.exists()


def test_nothing_to_do(db: None) -> None:
    assert "Added 0 users, 0 songs and 0 queue entries" in seed()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--songs", "-5"), "argument --songs: must be 0 or more, got -5"),
        (("--users", "-1"), "argument --users: must be 0 or more, got -1"),
        (("--songs", "lots"), "argument --songs: expected a whole number, got 'lots'"),
        (("--batch-size", "0"), "argument --batch-size: must be 1 or more, got 0"),
    ],
)
def test_bad_arguments_raise_command_error(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        seed(*args)


# --- as a real process ---------------------------------------------------------------------------------


def manage(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a subprocess against a scratch SQLite file under tmp_path."""
    env = {
        **os.environ,
        "SECRET_KEY": "test-only-secret-key-for-seed-demo-subprocesses",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'seed.db'}",
        "SONGSGEN_DATA_DIR": str(tmp_path),
    }
    env.pop("DEBUG", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--songs", "-5"), "argument --songs: must be 0 or more, got -5"),
        (("--users", "x"), "argument --users: expected a whole number, got 'x'"),
        (("--batch-size", "0"), "argument --batch-size: must be 1 or more, got 0"),
    ],
)
def test_bad_arguments_exit_2_in_a_process(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = manage(tmp_path, "seed_demo", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "usage: manage.py seed_demo" in result.stderr
    assert result.stdout == ""


def test_process_seeds_then_refuses_songs_without_users(tmp_path: Path) -> None:
    migrated = manage(tmp_path, "migrate", "--no-input", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr

    refused = manage(tmp_path, "seed_demo", "--songs", "10")
    assert refused.returncode == 1
    assert "CommandError: Songs need owners: there are no users yet" in refused.stderr

    done = manage(tmp_path, "seed_demo", "--users", "10", "--songs", "300", "--batch-size", "100")
    assert done.returncode == 0, done.stderr
    assert "songs:          300 / 300 (100%)" in done.stdout
    assert "Added 10 users, 300 songs" in done.stdout

    quiet = manage(tmp_path, "seed_demo", "--users", "1", "--songs", "5", "-v", "0")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""


def test_the_first_worker_after_a_seed_finds_no_expired_lease(tmp_path: Path) -> None:
    """A fresh demo started with "Returned 6 job(s) with an expired lease to the queue": seeded running jobs."""
    assert manage(tmp_path, "migrate", "--no-input", "-v", "0").returncode == 0
    seeded = manage(tmp_path, "seed_demo", "--users", "20", "--songs", "300", "--seed", "7")
    assert seeded.returncode == 0, seeded.stderr

    worker = manage(tmp_path, "runworker", "--burst", "--max-jobs", "1")

    assert worker.returncode == 0, worker.stderr
    assert "expired lease" not in worker.stdout + worker.stderr
