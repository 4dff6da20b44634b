"""The safe migrate waits for each replica to replay each migration, and says so when one does not."""

from __future__ import annotations

import subprocess
import sys

from tests.db.conftest import REPO, app_env, run_migrate


def test_migrate_waits_for_the_replica_and_reports_its_lag(replica, replica_env, tmp_path):
    """Code reading a replica never sees a schema older than the primary's: the migrate waits for the replay."""
    env = app_env(replica_env, tmp_path, "tests.settings_fixture")
    replica.set_delay(1)
    try:
        done = run_migrate(env, "migrations_fixture", "0001", "--no-backup")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Replica replica1: replayed migrations_fixture.0001" in done.stdout, done.stdout
        assert "Replica replica1 replay lag: migrations_fixture.0001" in done.stdout
        lag = float(done.stdout.split("Replica replica1 replay lag: ")[1].split(" ")[1])
        assert lag >= 0.9, done.stdout  # replayed no sooner than the replica's apply delay allowed
    finally:
        replica.set_delay(0)
        run_migrate(env, "migrations_fixture", "zero", "--plain", "-v0")


def test_migrate_with_the_replica_stopped_says_so_after_its_bound_and_goes_on(replica, replica_env, tmp_path):
    """A stopped replica cannot hold a deploy forever: named after the bound, the migrate completes."""
    env = dict(app_env(replica_env, tmp_path, "tests.settings_fixture"), SONGSGEN_MIGRATE_REPLICA_WAIT_SECONDS="2")
    replica.stop()
    try:
        done = run_migrate(env, "migrations_fixture", "0001", "--no-backup")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Replica replica1: had not replayed migrations_fixture.0001" in done.stdout, done.stdout
        assert "after 2 s" in done.stdout and "going on" in done.stdout
        assert "Result: ok" in done.stdout
    finally:
        replica.start()
        run_migrate(env, "migrations_fixture", "zero", "--plain", "-v0")


def test_a_long_wait_for_the_replica_is_announced_while_it_lasts(replica, replica_env, tmp_path):
    """The migration is committed while the migrate waits for the replica: saying so keeps an operator from Ctrl-C."""
    env = dict(app_env(replica_env, tmp_path, "tests.settings_fixture"), SONGSGEN_MIGRATE_REPLICA_WAIT_SECONDS="30")
    replica.stop()
    migrate = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "migrate", "migrations_fixture", "0001",
                                "--no-backup"], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert migrate.stdout is not None
        seen = []
        for line in migrate.stdout:
            seen.append(line)
            if "Waiting up to 30 s for replica1 to replay migrations_fixture.0001" in line:
                break
        assert migrate.poll() is None, "".join(seen)  # said while waiting, not after
        replica.start()
        rest = migrate.stdout.read()
        assert migrate.wait(timeout=120) == 0, rest
        assert "Replica replica1: replayed migrations_fixture.0001" in rest, rest
    finally:
        if migrate.poll() is None:
            migrate.kill()
            migrate.wait()
        if not (replica.data / "postmaster.pid").exists():
            replica.start()
        run_migrate(env, "migrations_fixture", "zero", "--plain", "-v0")
