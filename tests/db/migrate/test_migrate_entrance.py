"""One entrance to the safe migrate: a deploy script's `call_command("migrate")` is guarded like a typed one."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DEPLOY = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", {args})
"""


def _deploy(tmp_path: Path, args: str = "", database: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A deploy script on the project's own settings (not the test settings), on a data folder of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SONGSGEN_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="songsgen.settings", SECRET_KEY="test-only", DEBUG="1",
               SONGSGEN_DATA_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    if database is not None:
        env["DATABASE_URL"] = f"sqlite:///{database}"
    return subprocess.run([sys.executable, "-c", DEPLOY.format(args=args)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_call_command_migrate_from_code_takes_the_safe_path(tmp_path):
    result = _deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Plan for database 'default'" in result.stdout and "Result: ok" in result.stdout
    assert "Verified: the live schema matches the migrations" in result.stdout


def test_call_command_migrate_from_code_refuses_a_foreign_database(tmp_path):
    foreign = tmp_path / "invoices.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    result = _deploy(tmp_path, database=foreign)
    assert result.returncode != 0
    assert "CommandError" in result.stderr and "--adopt" in result.stderr
    assert foreign.read_bytes() == before  # not a table added, not switched to WAL


@pytest.mark.parametrize("args", ["safe=False", "plain=True"])
def test_code_opts_out_explicitly(tmp_path, args):
    result = _deploy(tmp_path, args)
    assert result.returncode == 0, result.stderr
    assert "Plan for database" not in result.stdout and "Operations to perform" in result.stdout
