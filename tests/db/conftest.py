"""Fixtures for the safe migrate's tests: a migrate subprocess with the failure-injection app, rows to keep,
and a live writer process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.db.live import LiveWriter
from tests.factories import make_song, make_user


def app_env(subprocess_env: dict[str, str], data: object, settings_module: str) -> dict[str, str]:
    """A subprocess environment with a test app's settings and its own data (and backup) folder."""
    env = dict(subprocess_env, DJANGO_SETTINGS_MODULE=settings_module, SONGSGEN_DATA_DIR=str(data))
    env.pop("SONGSGEN_BACKUP_DIR", None)
    return env


def run_migrate(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`manage.py migrate` typed as a user would, in a subprocess."""
    return subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fixture_env(subprocess_env, tmp_path):
    return app_env(subprocess_env, tmp_path, "tests.settings_fixture")


@pytest.fixture
def migrate(fixture_env):
    """Run the safe migrate (typed, as a user would) in a subprocess; returns CompletedProcess."""

    def run(*args: str, extra_env: dict[str, str] | None = None, timeout: float = 120):
        return run_migrate(dict(fixture_env, **(extra_env or {})), *args, timeout=timeout)

    yield run
    # Leave the test database without the fixture app, whatever the test did.
    run("migrations_fixture", "zero", "--plain", "-v0")


@pytest.fixture
def rows():
    user = make_user()
    for i in range(4):
        make_song(user=user, title=f"keep {i}")
    make_user(username="live-writer")


@pytest.fixture
def writer(fixture_env, tmp_path, rows):
    live = LiveWriter(fixture_env, tmp_path)
    yield live
    if live.proc.poll() is None:
        live.proc.kill()
        live.proc.wait()
