"""Real worker processes that must stay live: a hung generator, bad settings, a generator's interrupts."""

from __future__ import annotations

import signal

import pytest

from queueing.models import GenerationQueue
from songs.models import Song
from tests.factories import make_song
from tests.queueing.test_worker_processes import GEN, start_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPTED = {"SONGSGEN_GENERATOR": GEN + "ScriptedGenerator"}


def stop(proc) -> tuple[str, str]:
    """SIGTERM a worker still running and collect its output; SIGKILL it if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_hung_generation_times_out_while_a_second_worker_takes_the_rest_of_its_batch(subprocess_env):
    quick = make_song(priority=10, title="quick")  # done first: the worker's batch then grows
    hung = make_song(priority=5, title="hang")
    rest = [make_song(title=f"rest {i}") for i in range(6)]
    timeout = 30  # the job's own timeout (long enough for a second worker to start on a busy machine)
    GenerationQueue.objects.filter(song=hung).update(timeout_seconds=timeout, max_retries=0)
    first = start_worker(subprocess_env, "--queue-poll", "0.1", "--batch", "8", **SCRIPTED)
    second = None
    try:
        snapshot: dict[int, str] = {}

        def hung_running() -> bool:
            snapshot.clear()
            snapshot.update(GenerationQueue.objects.filter(status="running").values_list("song_id", "worker_id"))
            return hung.pk in snapshot

        wait_for(hung_running, 30, "the first worker to start the hung job")
        holder = snapshot[hung.pk]
        # Claimed in one batch with the hung job: the rest would wait behind it.
        assert any(snapshot.get(song.pk) == holder for song in rest), snapshot
        assert quick.queue_entries.get().status == "done"

        second = start_worker(subprocess_env, "--queue-poll", "0.1", **SCRIPTED)
        wait_for(lambda: GenerationQueue.objects.filter(song__in=rest, status="done").count() == len(rest), 30,
                 "the second worker to generate the rest of the first worker's batch")
        job = hung.queue_entries.get()
        assert (job.status, job.worker_id) == ("running", holder)  # still generating, not yet timed out
        assert set(GenerationQueue.objects.filter(song__in=rest).values_list("worker_id", flat=True)) != {holder}
        out, err = stop(second)
        assert second.returncode == 0, err

        wait_for(lambda: hung.queue_entries.get().status == "failed", timeout + 20, "the hung job to time out")
        job = hung.queue_entries.get()
        assert f"timed out after {timeout} s" in job.error_message
        assert Song.objects.get(pk=hung.pk).status == "failed"
        # The first worker moved on: it generates what comes next.
        later = make_song(title="later")
        wait_for(lambda: later.queue_entries.get().status == "done", 30, "the first worker to take a new job")
        assert later.queue_entries.get().worker_id == holder
        assert first.poll() is None
    finally:
        try:
            out, err = stop(first)
        finally:
            if second is not None and second.returncode is None:
                stop(second)
    assert first.returncode == 0, err
    assert f"Job {hung.queue_entries.get().pk} failed: TimeoutError" in err


def test_generation_timeout_setting_fails_the_attempt_then_the_job(subprocess_env):
    hung, other = make_song(priority=1, title="hang"), make_song(title="quick")
    GenerationQueue.objects.filter(song=hung).update(max_retries=1)
    env = {**subprocess_env, "SONGSGEN_GENERATION_TIMEOUT": "1", "SONGSGEN_RETRY_BACKOFF_SECONDS": "0", **SCRIPTED}
    proc = start_worker(env, "--burst")
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    job = hung.queue_entries.get()
    # The first attempt timed out and was retried; the retry timed out too, and the job failed.
    assert (job.status, job.retry_count) == ("failed", 1)
    assert job.error_message == "TimeoutError: generation timed out after 1 s and was stopped."
    assert Song.objects.get(pk=hung.pk).status == "failed"
    assert other.queue_entries.get().status == "done"
    assert err.count("timed out after 1 s") == 2


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"SONGSGEN_LEASE_SECONDS": "0"}, "SONGSGEN_LEASE_SECONDS must be between 3 and 86400 seconds"),
        ({"SONGSGEN_LEASE_SECONDS": "2"}, "SONGSGEN_LEASE_SECONDS must be between 3 and 86400 seconds"),
        ({"SONGSGEN_LEASE_SECONDS": "nan"}, "SONGSGEN_LEASE_SECONDS must be between 3 and 86400 seconds"),
        ({"SONGSGEN_LEASE_SECONDS": "10", "SONGSGEN_HEARTBEAT_SECONDS": "6"},
         "SONGSGEN_HEARTBEAT_SECONDS must be between 0.1 and 5 seconds (at most half of SONGSGEN_LEASE_SECONDS)"),
        ({"SONGSGEN_GENERATION_TIMEOUT": "0"}, "SONGSGEN_GENERATION_TIMEOUT must be between 1 and 86400 seconds"),
        ({"SONGSGEN_CLAIM_BATCH": "0"}, "SONGSGEN_CLAIM_BATCH must be a whole number between 1 and 1000"),
        ({"SONGSGEN_RETRY_BACKOFF_SECONDS": "60", "SONGSGEN_RETRY_BACKOFF_MAX_SECONDS": "30"},
         "SONGSGEN_RETRY_BACKOFF_MAX_SECONDS must be between 60 and 604800 seconds"),
    ],
)
@pytest.mark.parametrize("concurrency", ["1", "2"])
def test_out_of_range_worker_setting_is_refused_before_any_claim(manage, subprocess_env, env, variable, concurrency):
    song = make_song()
    result = manage("runworker", "--burst", "--concurrency", concurrency,
                    env={**subprocess_env, **env, "SONGSGEN_GENERATOR": GEN + "NoopGenerator"}, timeout=60)
    assert result.returncode != 0
    assert variable in result.stderr
    job = song.queue_entries.get()
    assert (job.status, job.retry_count, job.worker_id) == ("queued", 0, None)
    assert Song.objects.get(pk=song.pk).status == "pending"


def test_generator_that_cannot_be_made_stops_the_worker_before_any_claim(manage, subprocess_env):
    song = make_song()
    result = manage("runworker", "--burst", env={**subprocess_env, "SONGSGEN_GENERATOR": GEN + "BrokenGenerator"})
    assert result.returncode == 1
    assert (f"SONGSGEN_GENERATOR='{GEN}BrokenGenerator' could not be started: RuntimeError: SUNO_API_KEY is not set"
            in result.stderr)
    assert song.queue_entries.get().status == "queued"


def test_generator_raising_keyboardinterrupt_or_systemexit_fails_its_attempt_and_the_worker_goes_on(manage,
                                                                                                    subprocess_env):
    interrupting = make_song(priority=3, title="keyboard-interrupt")
    exiting = make_song(priority=2, title="system-exit")
    crashing = make_song(priority=1, title="crash")
    after = make_song(title="quick")
    GenerationQueue.objects.filter(song__in=[interrupting, exiting, crashing]).update(max_retries=0)
    result = manage("runworker", "--burst", env={**subprocess_env, **SCRIPTED}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "stopped after 4 job(s)" in result.stdout
    assert interrupting.queue_entries.get().status == "failed"
    assert interrupting.queue_entries.get().error_message == "KeyboardInterrupt"
    assert exiting.queue_entries.get().error_message == "SystemExit: 3"
    assert Song.objects.get(pk=exiting.pk).status == "failed"
    assert crashing.queue_entries.get().error_message == "GeneratorCrashed: the generator process exited with code 7."
    assert after.queue_entries.get().status == "done"


def test_generator_interrupted_after_the_worker_was_signalled_is_released_untouched(subprocess_env):
    song = make_song(priority=1, title="interrupt-later")
    untouched = make_song(title="quick")
    proc = start_worker(subprocess_env, "--queue-poll", "0.1", SONGSGEN_TEST_SLOW_SECONDS="2", **SCRIPTED)
    try:
        wait_for(lambda: GenerationQueue.objects.filter(song=song, status="running").exists(), 30, "a claim")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Received SIGTERM" in out
    job = song.queue_entries.get()
    # Not an attempt: the interrupt came with the worker's own stop, so the job goes back as it was.
    assert (job.status, job.retry_count, job.worker_id, job.error_message) == ("queued", 0, None, "")
    assert Song.objects.get(pk=song.pk).status == "pending"
    assert untouched.queue_entries.get().status == "queued"


def test_killed_worker_takes_its_generation_with_it(subprocess_env):
    """SIGKILL: no orphan generator process lives on, generating a song another worker will redo."""
    song = make_song(title="interrupt-later")
    proc = start_worker(subprocess_env, "--queue-poll", "0.1", SONGSGEN_TEST_SLOW_SECONDS="60", **SCRIPTED)
    try:
        wait_for(lambda: GenerationQueue.objects.filter(song=song, status="running").exists(), 30, "a claim")
        children = _children(proc.pid)
        assert children, "the worker runs its generation in a child process"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not any(_alive(pid) for pid in children), 10, "the generator process to exit")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
