"""`manage.py dbrestore` asks before it replaces anything, and a refused restore writes nothing (issue 26)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.db.backup.helpers import add_songs, back_up, backups


def _song_count() -> int:
    from songs.models import Song

    return Song.objects.count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("answer", ["\n", "n\n", ""], ids=["enter", "no", "no-terminal"])
def test_a_restore_asks_what_it_replaces_and_enter_declines(run, backup_dir, answer):
    """Enter (or no terminal) must keep the live database: a destructive prompt defaults to no."""
    add_songs(40, prefix="kept")
    back_up(run)
    (name,) = backups(backup_dir)
    add_songs(25, prefix="newer")
    before = _song_count()

    result = run("dbrestore", input=answer)

    assert result.returncode != 0, result.stdout
    assert "[y/N]" in result.stdout
    assert "Restore cancelled: the live database was not changed." in result.stderr
    assert "server 'None'" not in result.stderr
    # What is replaced (the database, its size, its newest row) and by what (the backup, its time).
    settings_dict = connection.settings_dict
    shown = str(Path(settings_dict["NAME"]).resolve()) if connection.vendor == "sqlite" else repr(settings_dict["NAME"])
    assert f"This replaces the {'SQLite' if connection.vendor == 'sqlite' else 'PostgreSQL'} database {shown}" \
        in result.stdout
    assert re.search(r"\(\d[\d,.]* (KiB|MiB|bytes), newest row created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)",
                     result.stdout), result.stdout
    assert re.search(rf"with the backup {re.escape(name)} \(taken \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC, ",
                     result.stdout), result.stdout
    assert _song_count() == before


@pytest.mark.django_db(transaction=True)
def test_yes_restores(run, backup_dir):
    """Only an explicit yes replaces the database with the backup."""
    add_songs(40, prefix="kept")
    back_up(run)
    add_songs(25, prefix="newer")

    result = run("dbrestore", input="y\n")

    assert result.returncode == 0, result.stderr
    assert "server 'None'" not in result.stderr
    assert _song_count() == 40


def _operator_env(data_dir: Path) -> dict[str, str]:
    """An operator's shell: the project's settings, a data folder of the test's own, no DATABASE_URL."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SONGSGEN_", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"))}
    env.update(SONGSGEN_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO),
               SECRET_KEY="test-only-secret-key-never-used-outside-the-test-suite")
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [
    ["dbrestore", "--noinput"],
    ["dbrestore"],
    ["dbrestore", "--noinput", "-i", "songs-2026-01-01-000000.sqlite3.zst"],
    ["dbrestore", "--noinput", "--from-replica", "--to-time", "2026-01-01T00:00"],
    ["dbrestore", "--noinput", "--from-replica"],
], ids=["noinput", "interactive", "named", "to-time-without-zone", "empty-replica"])
def test_a_refused_restore_on_a_fresh_data_dir_creates_nothing(tmp_path, args):
    """A refusal is one line and leaves no data folder and no lock file behind."""
    data_dir = tmp_path / "data"

    result = _manage(_operator_env(data_dir), *args)

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "usage:" not in result.stderr
    assert not data_dir.exists(), sorted(p.name for p in data_dir.rglob("*"))


def test_a_time_without_zone_says_how_to_write_it(tmp_path):
    """The one line still says what to fix."""
    result = _manage(_operator_env(tmp_path / "data"), "dbrestore", "--noinput", "--from-replica",
                     "--to-time", "2026-01-01T00:00")
    assert result.returncode == 2
    assert result.stderr.strip() == ("CommandError: --to-time '2026-01-01T00:00' has no time zone; add Z for UTC "
                                     "(2026-11-30T14:02:00Z).")


def test_the_refusal_names_the_pre_migrate_snapshots_that_i_restores(tmp_path):
    """With no backup but migrate's snapshots beside them, the refusal says which -i restores."""
    env = _operator_env(tmp_path / "data")
    assert _manage(env, "migrate", "--noinput", "queueing").returncode == 0
    assert _manage(env, "migrate", "--noinput").returncode == 0  # its snapshot: a songsgen database
    snapshot = sorted(p.name for p in (tmp_path / "data" / "backups").glob("pre-migrate-*"))[-1]

    refused = _manage(env, "dbrestore", "--noinput")

    assert refused.returncode != 0
    assert f"`manage.py dbrestore -i {snapshot}`" in refused.stderr
    restored = _manage(env, "dbrestore", "--noinput", "-i", snapshot)
    assert restored.returncode == 0, restored.stderr


def test_discarding_safety_copies_on_a_fresh_data_dir_creates_nothing(tmp_path):
    """Nothing to discard is said, and no data folder or lock is made to say it."""
    data_dir = tmp_path / "data"
    result = _manage(_operator_env(data_dir), "dbrestore", "--discard-safety-copies")
    assert result.returncode == 0, result.stderr
    assert "No safety copies" in result.stdout
    assert not data_dir.exists()
