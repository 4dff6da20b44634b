"""/health: 200 when every check passes, 500 naming each check that fails, on real rows, files and processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from songsgen.db import marker
from songsgen.monitoring.probes import Replication
from tests.conftest import REPO
from tests.db.live import hanging_migrate, killed_half_way
from tests.monitoring.conftest import aged, bearer, health, job

CHECKS = {"database", "migrations", "migrate", "backup", "replication (not configured)", "disk", "queue wait",
          "queue leases"}


def failing(checks: dict[str, str]) -> set[str]:
    return {name for name, result in checks.items() if result != "OK"}


def test_all_well_is_200_listing_every_check(client, fresh_backup):
    job()  # a job queued just now
    job("running", worker_id="w1", lease_expires_at=timezone.now() + timedelta(seconds=60))
    status, checks = health(client)
    assert (status, checks) == (200, dict.fromkeys(CHECKS, "OK"))


def test_html_and_accept_header_json(client, fresh_backup):
    page = client.get("/health", **bearer())
    assert page.status_code == 200 and b"<html" in page.content.lower()
    as_json = client.get("/health", HTTP_ACCEPT="application/json", **bearer())
    assert as_json.status_code == 200 and as_json.json()["backup"] == "OK"


def test_backup_older_than_the_limit_is_500_naming_backup(client, fresh_backup, settings):
    old = aged(fresh_backup, hours=30)
    status, checks = health(client)
    assert status == 500 and failing(checks) == {"backup"}
    assert old.name in checks["backup"] and "30.0 h old (limit 26 h)" in checks["backup"]
    settings.HEALTH_BACKUP_MAX_AGE_HOURS = 31  # the limit is a setting
    assert health(client)[0] == 200


def test_no_backup_is_500_naming_backup(client, folders):
    status, checks = health(client)
    assert status == 500 and failing(checks) == {"backup"}
    assert "no backup of this database yet" in checks["backup"]


def test_unapplied_migration_is_500_naming_it(client, fresh_backup):
    call_command("migrate", "accounts", "0001", verbosity=0)  # one step back, as after deploying new code
    try:
        status, checks = health(client)
    finally:
        call_command("migrate", "accounts", verbosity=0)
    assert status == 500 and failing(checks) == {"migrations"}
    assert "1 migration(s) not applied: accounts.0002_create_user_event" in checks["migrations"]
    assert health(client)[0] == 200


def test_job_past_its_lease_is_500_naming_the_job(client, fresh_backup):
    within_grace = job("running", worker_id="w1", lease_expires_at=timezone.now() - timedelta(seconds=10))
    assert health(client)[0] == 200  # a worker reclaims an expired lease within a second: not stuck yet
    stuck = job("running", worker_id="dead", lease_expires_at=timezone.now() - timedelta(minutes=10))
    status, checks = health(client)
    assert status == 500 and failing(checks) == {"queue leases"}
    assert f"1 running job(s) past their lease by more than 60 s (job {stuck.pk})" in checks["queue leases"]
    assert str(within_grace.pk) not in checks["queue leases"]


def test_job_waiting_too_long_is_500_naming_queue_wait(client, fresh_backup):
    job(queued_at=timezone.now() - timedelta(minutes=20))
    status, checks = health(client)
    assert status == 500 and failing(checks) == {"queue wait"}
    assert "has waited 20.0 min (limit 15 min)" in checks["queue wait"]


def test_no_room_for_the_next_backup_is_500_naming_disk(client, fresh_backup, settings):
    settings.MIGRATE_BACKUP_MARGIN_BYTES = 2**62  # more than any disk has
    status, checks = health(client)
    assert status == 500 and failing(checks) == {"disk"}
    assert "the next backup needs about" in checks["disk"]


def test_write_lock_held_is_500_naming_database(client, fresh_backup):
    """Another session holds the write lock longer than the probe waits (as a long migrate would)."""
    if connection.vendor == "sqlite":
        holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        from songsgen.db.pgdump import connect_params

        holder = psycopg.connect(**connect_params(connection.settings_dict))
        holder.execute("LOCK TABLE django_migrations IN EXCLUSIVE MODE")
    try:
        status, checks = health(client)
    finally:
        holder.rollback()
        holder.close()
    assert status == 500 and "database" in failing(checks)
    assert "no write within 2 s: another transaction holds the write lock" in checks["database"]


def replica_behind(connection) -> Replication:  # the seam's contract: settings.REPLICATION_STATUS names it
    return Replication(configured=True, lag_seconds=120.0)


def test_replication_is_listed_as_not_configured_until_it_is(client, fresh_backup, settings):
    assert health(client)[1]["replication (not configured)"] == "OK"
    settings.REPLICA_URL = "file:///srv/replica"
    status, checks = health(client)
    if connection.vendor == "sqlite":  # asked for, but `manage.py replicate` (Litestream) is not running
        assert status == 500 and "`manage.py replicate` is not running" in checks["replication"]
    else:  # Litestream replicates SQLite only: nothing to report on PostgreSQL
        assert status == 200 and checks["replication"] == "OK"
    settings.REPLICATION_STATUS = "tests.monitoring.test_health.replica_behind"
    status, checks = health(client)
    assert status == 500 and checks["replication"] == "Unavailable: the replica is 120 s behind (limit 60 s)."
    settings.HEALTH_REPLICATION_MAX_LAG_SECONDS = 300
    assert health(client) == (200, {**dict.fromkeys(CHECKS - {"replication (not configured)"}, "OK"),
                                    "replication": "OK"})


@pytest.fixture
def fixture_env(env, folders):
    """A migrate subprocess with the failure-injection app (tests/migrations_fixture), on the test's folders."""
    env = dict(env, DJANGO_SETTINGS_MODULE="tests.settings_fixture")
    env.pop("SONGSGEN_BACKUP_DIR")  # the snapshot goes to <data>/backups, as killed_half_way's callers expect
    yield env
    subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "migrations_fixture", "zero", "--plain",
                    "-v0"], env=env, cwd=REPO, capture_output=True, timeout=120)


def test_migrate_running_is_not_a_failure_but_killed_is_500_naming_migrate(client, fresh_backup, fixture_env,
                                                                          folders):
    proc = hanging_migrate(fixture_env, folders["data"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert marker.read(connection) is not None
        checks = health(client)[1]
        assert checks["migrate"] == "OK"  # running: the lock is held by a live process
    finally:
        proc.kill()
        proc.wait(timeout=30)
    status, checks = health(client)
    assert status == 500 and "migrate" in failing(checks)
    assert "was interrupted" in checks["migrate"] and "manage.py migrate" in checks["migrate"]


def test_interrupted_migrate_after_a_commit(client, fresh_backup, fixture_env, folders):
    killed_half_way(fixture_env, folders["data"], SONGSGEN_FIXTURE_ATOMIC="0")
    status, checks = health(client)
    assert status == 500 and "migrate" in failing(checks)
    assert f"pid {marker.read(connection)['pid']}" in checks["migrate"]
