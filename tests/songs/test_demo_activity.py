"""make run's demo keeps moving: a paced generator, and a backlog of new requests from the demo's users."""

from __future__ import annotations

import os
import subprocess
import time
import wave
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db.models import Q

from accounts.models import User
from queueing.models import GenerationQueue
from songs.demo import seed_demo_data
from songs.demo_activity import DemoGenerator
from songs.models import Song
from tests.conftest import REPO
from tests.devserver import worker
from tests.factories import make_song, make_user


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.django_db
def test_top_up_requests_only_from_demo_users_up_to_the_backlog(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    generator = DemoGenerator()
    make_user(username="real", email="real@company.test")
    assert generator.top_up() == 0, "no demo users: real data gets no invented requests"

    seed_demo_data(users=4, songs=0, seed=3)
    assert generator.top_up() == DemoGenerator.backlog
    assert GenerationQueue.objects.queued().count() == DemoGenerator.backlog
    assert generator.top_up() == 0
    requested = Song.objects.filter(status="pending").select_related("user")
    assert {song.user.email.endswith("@example.com") for song in requested} == {True}
    assert all(song.title and song.lyrics and song.style_prompt for song in requested)


@pytest.mark.django_db
@pytest.mark.parametrize(("generator", "queued"), [("songs.demo_activity.DemoGenerator", DemoGenerator.backlog),
                                                   ("queueing.generators.LocalWavGenerator", 0)])
def test_bootstrap_dev_gives_make_runs_demo_generator_a_first_song(settings, tmp_path, generator, queued):
    """On a database whose queue has drained, make run's worker would never call the generator that refills it."""
    settings.MEDIA_ROOT, settings.SONGSGEN_GENERATOR = tmp_path, generator
    seed_demo_data(users=3, songs=0, seed=5)
    finished = make_song(user=User.objects.filter(email__endswith="@example.com").first())
    GenerationQueue.objects.filter(song=finished).update(status="done")
    out = StringIO()
    call_command("bootstrap_dev", stdout=out)
    assert "Database holds songs; no demo data loaded." in out.getvalue()
    assert GenerationQueue.objects.queued().count() == queued
    assert (f"Requested {queued} demo songs" in out.getvalue()) == bool(queued)
    call_command("bootstrap_dev", stdout=StringIO())
    assert GenerationQueue.objects.queued().count() == queued, "never more than the backlog"


@pytest.mark.django_db(transaction=True)
def test_demo_worker_shows_pending_generating_completed_and_keeps_a_backlog(subprocess_env, tmp_path):
    seed_demo_data(users=3, songs=0, seed=4)
    first = make_song(user=User.objects.filter(email__endswith="@example.com").first(), title="Watch Me Move")
    env = {**subprocess_env, "SONGSGEN_DATA_DIR": str(tmp_path),
           "SONGSGEN_GENERATOR": "tests.songs.generators.QuickDemoGenerator"}
    seen: list[str] = []

    def status_of_first() -> str:
        status = Song.objects.values_list("status", flat=True).get(pk=first.pk)
        if not seen or seen[-1] != status:
            seen.append(status)
        return status

    with worker(env):
        wait_for(lambda: status_of_first() == "completed", 30, "the first song to complete")
        # It was generating long enough to be seen, as a newcomer refreshing the list sees it.
        assert seen[-2:] == ["generating", "completed"]
        # One song in, and the work never runs out: each finished song tops the backlog up again.
        wait_for(lambda: Song.objects.completed().count() >= 6, 60, "five requests of the backlog to complete")
        assert GenerationQueue.objects.active().count() >= 1, "the backlog is topped up as songs finish"
    assert seen[0] in {"pending", "generating"}
    demo = Q(user__email__endswith="@example.com")
    assert Song.objects.filter(demo).exclude(pk=first.pk).count() >= 5 + 1
    for path in Song.objects.completed().values_list("audio_file_path", flat=True):
        with wave.open(str(tmp_path / "media" / path)) as audio:
            assert audio.getnframes() > 0


@pytest.mark.parametrize(("env", "expected"), [({}, "songs.demo_activity.DemoGenerator"),
                                               ({"SONGSGEN_GENERATOR": "my.Generator"}, "my.Generator")])
def test_make_run_starts_its_worker_with_the_demo_generator(tmp_path: Path, env, expected):
    """`make run` names DemoGenerator for its worker unless you name another (a stand-in python logs each call;
    the supervisor, songsgen/devrun.py, hands its environment to the worker it starts)."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$* generator=$SONGSGEN_GENERATOR" >> {log}\n')
    fake.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k != "SONGSGEN_GENERATOR"}
    result = subprocess.run(["make", "-s", "-o", "venv", "-o", ".venv/.installed", "run", f"PY={fake}",
                             f"RUN_FILE={tmp_path / 'running'}"],
                            cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert any(c.startswith("-m songsgen.devrun") and c.endswith(f"generator={expected}") for c in calls), calls
