"""The suite passes however it is launched, also as a background job of a script (`make test &`)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest
from django.db import connection

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(connection.vendor != "sqlite", reason="a nested run of SQLite tests: once is enough")

# Two quick tests that interrupt a child with SIGINT; the others use the same helper (tests/sigint.py).
SIGINT_TESTS = [
    "tests/queueing/test_worker_processes.py::test_second_signal_exits_at_once_and_the_lease_covers_the_job",
    "tests/db/migrate/test_rehearse.py::test_ctrl_c_removes_the_copy",
]


def _in_background_job(command: list[str]) -> subprocess.CompletedProcess[str]:
    """`command &` in a non-interactive bash, as a script starts it: without job control, SIGINT is ignored."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DJANGO_", "PYTEST_"))}
    return subprocess.run(["bash", "-c", f"{shlex.join(command)} & wait $!"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_ctrl_c_tests_pass_when_the_suite_runs_as_a_background_job():
    """Children that inherit an ignored SIGINT ignore the test's Ctrl-C: such tests failed only when backgrounded."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    assert _in_background_job([sys.executable, "-c", probe]).stdout.strip() == "True"  # else this proves nothing
    result = _in_background_job([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SIGINT_TESTS])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
