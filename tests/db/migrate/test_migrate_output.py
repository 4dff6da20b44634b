"""What the first `manage.py migrate` prints: short and readable by default, the detail at -v2 (issue 26)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _migrate(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """`manage.py migrate` as an operator runs it on a new data folder (SQLite): the first run of `make run`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SONGSGEN_", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"))}
    env.update(SONGSGEN_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO),
               SECRET_KEY="test-only-secret-key-never-used-outside-the-test-suite")
    result = subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "--noinput", *args], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def _plan(output: str) -> list[str]:
    return re.findall(r"^  apply (\S+)", output, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    data_dir = tmp_path_factory.mktemp("first") / "data"
    return _migrate(data_dir), data_dir


def test_each_migration_is_named_once_and_django_does_not_repeat_the_plan(first_run):
    """One line per migration: Django's own "Applying …" lines and the long "Applied:" list said it twice more."""
    result, _ = first_run
    plan = _plan(result.stdout)
    assert len(plan) > 20
    assert "Applying " not in result.stdout and "Operations to perform" not in result.stdout
    for name in plan:
        assert len([line for line in result.stdout.splitlines() if name in line]) <= 2, name  # plan, maybe slowest
    assert len(result.stdout.splitlines()) <= len(plan) + 12, result.stdout


def test_no_line_is_longer_than_a_terminal(first_run):
    """A list wraps at 100 columns; only a line naming a file path may run longer."""
    result, data_dir = first_run
    long = [line for line in result.stdout.splitlines() if len(line) > 100 and str(data_dir) not in line]
    assert long == []
    assert re.search(r"^Applied: all \d+ migration\(s\) of the plan", result.stdout, flags=re.MULTILINE)


def test_verbosity_2_shows_djangos_lines_and_each_migrations_times(tmp_path):
    """The detail is one flag away."""
    result = _migrate(tmp_path / "data", "-v2")
    plan = _plan(result.stdout)
    assert len(re.findall(r"^  Applying \S+\.\.\. OK", result.stdout, flags=re.MULTILINE)) == len(plan)
    for name in plan:
        assert re.search(rf"^  {re.escape(name)} \(\d+\.\d\d s", result.stdout, flags=re.MULTILINE), name


def test_an_unapply_says_unapplied(first_run):
    """Stepping back a migration is not an apply: the summary line must not say it applied what it removed."""
    _, data_dir = first_run
    result = _migrate(data_dir, "songs", "0004", "--allow-unsafe", "--no-backup")
    assert re.search(r"^Unapplied: all 1 migration\(s\) of the plan", result.stdout, flags=re.MULTILINE), result.stdout
    assert "Applied:" not in result.stdout
    _migrate(data_dir, "--no-backup")
