"""`dbcheck` after a SIGKILLed migrate: the interrupted run is a problem, with the advice the next migrate gives.

Real processes throughout: a `manage.py migrate` of the failure-injection app (tests/migrations_fixture) killed
while its 0003 hangs, then `manage.py dbcheck` on the same database and data folder.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.db.live import NON_ATOMIC, hanging_migrate, killed_half_way

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rows")]


@pytest.fixture
def dbcheck(fixture_env):
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(REPO / "manage.py"), "dbcheck"], env=fixture_env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    return run


def test_a_run_killed_before_it_committed_is_reported_until_migrate_carries_on(migrate, dbcheck, fixture_env,
                                                                                 tmp_path):
    assert dbcheck().returncode == 0
    killed_half_way(fixture_env, tmp_path)
    found = dbcheck()
    assert found.returncode == 1, found.stdout + found.stderr
    line = next(x for x in found.stdout.splitlines() if x.startswith("[error] migrate:"))
    assert "was interrupted before it committed a migration; nothing to undo" in line
    assert "run `manage.py migrate`: it clears the marker and carries on" in line
    assert "interrupted" in found.stderr  # the one-line summary names it first
    again = migrate("migrations_fixture", "0003")
    assert again.returncode == 0, again.stderr
    assert "interrupted before it committed a migration; nothing to undo, carrying on." in again.stdout
    after = dbcheck()
    assert after.returncode == 0 and "interrupted" not in after.stdout, after.stdout + after.stderr


def test_a_run_killed_after_committing_names_resume_restore_as_the_next_migrate_does(migrate, dbcheck, fixture_env,
                                                                                     tmp_path):
    killed_half_way(fixture_env, tmp_path, **NON_ATOMIC)
    found = dbcheck()
    assert found.returncode == 1, found.stdout + found.stderr
    [line] = [x for x in found.stdout.splitlines() if x.startswith("[error] migrate:")]
    advice = re.search(r"(A previous migrate .*then migrate again\.)", line)
    assert advice and "migrations_fixture.0002_touch_existing_rows" in advice.group(1)
    assert "`manage.py migrate --resume-restore`" in advice.group(1)
    refused = migrate("migrations_fixture", "0003", extra_env=NON_ATOMIC)
    assert refused.returncode == 2
    assert advice.group(1) in refused.stderr  # word for word what migrate says
    assert migrate("--resume-restore").returncode == 0
    after = dbcheck()
    assert after.returncode == 0 and "interrupted" not in after.stdout, after.stdout + after.stderr


def test_a_running_migrate_is_not_reported_as_interrupted(migrate, dbcheck, fixture_env, tmp_path):
    proc = hanging_migrate(fixture_env, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert list(tmp_path.glob("migrate-in-progress-*"))  # the marker is there: the lock tells running from dead
        running = dbcheck()
        assert "interrupted" not in running.stdout + running.stderr
        assert running.returncode == 0, running.stdout + running.stderr
    finally:
        proc.kill()
        proc.wait(timeout=30)
    dead = dbcheck()  # the same marker, its process gone
    assert dead.returncode == 1 and "was interrupted" in dead.stdout
    assert migrate("migrations_fixture", "0003").returncode == 0
