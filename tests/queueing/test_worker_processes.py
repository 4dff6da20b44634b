"""Real worker processes on a real database: exactly-once draining, SIGKILL recovery, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from django.db import connection, transaction

from queueing.models import GenerationQueue
from songs.models import Song
from tests import sigint
from tests.conftest import REPO
from tests.factories import make_song, make_user
from tests.queueing.generators import CREATE_EXECUTIONS, EXECUTIONS_TABLE

pytestmark = pytest.mark.django_db(transaction=True)

GEN = "tests.queueing.generators."


@pytest.fixture
def executions():
    """The executions table (one row per generate() call, UNIQUE per song); returns a row reader."""
    with connection.cursor() as cursor:
        cursor.execute(CREATE_EXECUTIONS)
        cursor.execute(f"DELETE FROM {EXECUTIONS_TABLE}")

    def rows() -> list[tuple[int, int]]:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT song_id, pid FROM {EXECUTIONS_TABLE}")
            return list(cursor.fetchall())

    yield rows
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {EXECUTIONS_TABLE}")


def start_worker(env: dict[str, str], *args: str, **extra_env: str) -> subprocess.Popen[str]:
    return sigint.popen(
        [sys.executable, str(REPO / "manage.py"), "runworker", *args], env={**env, **extra_env}, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(predicate, timeout: float, what: str) -> float:
    """Poll until predicate() is true; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def enqueue(n: int) -> list[Song]:
    user = make_user()
    with transaction.atomic():
        return [make_song(user=user, title=f"load {i}") for i in range(n)]


def test_four_worker_processes_drain_5000_jobs_exactly_once(subprocess_env, executions):
    n = 5000
    enqueue(n)
    proc = start_worker(subprocess_env, "--concurrency", "4", "--burst", SONGSGEN_GENERATOR=GEN + "RecordingGenerator")
    out, err = proc.communicate(timeout=150)
    assert "database is locked" not in (out + err).lower()
    assert proc.returncode == 0, err[-3000:]
    rows = executions()
    song_ids = [song_id for song_id, _ in rows]
    assert len(song_ids) == n and len(set(song_ids)) == n  # each song generated exactly once
    # Real contention: several processes took jobs. (Not always all four: a process that starts a
    # few hundred ms late can find the queue already drained by the others' batches.)
    assert len({pid for _, pid in rows}) >= 2, "the worker processes shared the jobs"
    assert GenerationQueue.objects.filter(status="done", retry_count=0, error_message="").count() == n
    assert not GenerationQueue.objects.exclude(status="done").exists()  # none lost
    assert Song.objects.filter(status="completed").count() == n
    assert set(Song.objects.values_list("pk", flat=True)) == set(song_ids)


def test_sigkilled_worker_job_is_completed_by_another_after_its_lease(subprocess_env, executions):
    lease = 3  # the shortest lease a worker accepts (queueing/config.py)
    env = {**subprocess_env, "SONGSGEN_LEASE_SECONDS": str(lease)}
    victim_song = make_song(priority=5)
    others = [make_song(), make_song()]
    victim = start_worker(env, "--queue-poll", "0.1", SONGSGEN_GENERATOR=GEN + "SlowGenerator",
                          SONGSGEN_TEST_SLOW_SECONDS="60")
    try:
        wait_for(lambda: GenerationQueue.objects.filter(song=victim_song, status="running").exists(), 30,
                 "the first worker to claim the job")
        # Held for longer than the lease: the heartbeat renews it while the worker lives.
        time.sleep(lease * 1.5)
        job = GenerationQueue.objects.get(song=victim_song)
        assert job.status == "running"
        killed_worker = job.worker_id
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.communicate(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
    rescuer = start_worker(env, "--max-jobs", "3", "--queue-poll", "0.1", SONGSGEN_GENERATOR=GEN + "SlowGenerator",
                           SONGSGEN_TEST_SLOW_SECONDS="0.05")
    out, err = rescuer.communicate(timeout=60)
    back_after = time.monotonic() - killed_at
    assert rescuer.returncode == 0, err
    job.refresh_from_db()
    assert job.status == "done" and job.worker_id != killed_worker
    assert job.retry_count == 1  # the crashed attempt counts
    assert Song.objects.get(pk=victim_song.pk).status == "completed"
    assert back_after <= lease + 5 + 2, back_after  # + 2 s for the rescuer's start-up
    for other in others:  # nothing else disturbed
        entry = other.queue_entries.get()
        assert (entry.status, entry.retry_count) == ("done", 0)
    assert sorted(song_id for song_id, _ in executions()) == sorted([victim_song.pk] + [s.pk for s in others])
    assert "Returned 1 job(s) with an expired lease" in out


def test_sigterm_mid_job_finishes_it_and_exits_0(subprocess_env, executions):
    first, second = make_song(priority=1), make_song()
    proc = start_worker(subprocess_env, "--queue-poll", "0.1", SONGSGEN_GENERATOR=GEN + "SlowGenerator",
                        SONGSGEN_TEST_SLOW_SECONDS="2")
    wait_for(lambda: GenerationQueue.objects.filter(song=first, status="running").exists(), 30, "a claim")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Received SIGTERM" in out
    assert first.queue_entries.get().status == "done"
    assert Song.objects.get(pk=first.pk).status == "completed"
    # the worker stopped claiming: the next job is untouched
    assert (second.queue_entries.get().status, Song.objects.get(pk=second.pk).status) == ("queued", "pending")


def test_second_signal_exits_at_once_and_the_lease_covers_the_job(subprocess_env, executions):
    song = make_song()
    proc = start_worker(subprocess_env, "--queue-poll", "0.1", SONGSGEN_GENERATOR=GEN + "SlowGenerator",
                        SONGSGEN_TEST_SLOW_SECONDS="60")
    wait_for(lambda: GenerationQueue.objects.filter(song=song, status="running").exists(), 30, "a claim")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    proc.communicate(timeout=10)
    assert time.monotonic() - started < 5
    assert proc.returncode == 128 + signal.SIGINT
    job = song.queue_entries.get()
    assert job.status == "running" and job.lease_expires_at is not None  # reclaimed once the lease expires
    assert executions() == []


def test_supervisor_passes_sigterm_to_its_workers(subprocess_env, executions):
    songs = [make_song() for _ in range(2)]
    proc = start_worker(subprocess_env, "--concurrency", "2", "--queue-poll", "0.1",
                        SONGSGEN_GENERATOR=GEN + "SlowGenerator", SONGSGEN_TEST_SLOW_SECONDS="1.5")
    wait_for(lambda: GenerationQueue.objects.filter(status="running").count() == 2, 30, "both workers to claim")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.count("Received SIGTERM") == 2
    assert all(s.queue_entries.get().status == "done" for s in songs)


def test_a_ctrl_c_while_the_workers_start_stops_them_cleanly(subprocess_env):
    """Ctrl-C right after `runworker --concurrency 2` starts reaches workers still importing Django: they stop
    without a KeyboardInterrupt traceback, and the supervisor says nothing failed."""
    proc = start_worker(subprocess_env, "--concurrency", "2", "--queue-poll", "0.1")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("Started 2 worker processes"), line
    proc.send_signal(signal.SIGINT)  # the workers are still starting: no handler of theirs is set yet
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "failed" not in (out + err).lower(), out + err
    assert proc.returncode == 0, err


def test_a_ctrl_c_while_the_supervisor_is_still_spawning_stops_every_worker(subprocess_env):
    """A stop that arrives before the last worker exists must reach the later ones too, not leave them running."""
    proc = start_worker(subprocess_env, "--concurrency", "6", "--queue-poll", "0.1")
    deadline = time.monotonic() + 30
    while not subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
        assert time.monotonic() < deadline and proc.poll() is None, "no worker was ever started"
    proc.send_signal(signal.SIGINT)  # as soon as the first worker exists: the others are not spawned yet
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        left = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        proc.kill()
        for pid in left:
            subprocess.run(["kill", "-9", pid])
        raise AssertionError(f"the supervisor still waits 60 s after Ctrl-C on workers {left}") from None
    assert proc.returncode == 0, err
