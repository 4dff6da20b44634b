"""/health: 200 when every check passes, 500 naming each check that fails, on real rows, files and processes."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from songsgen.db.migrate import marker
from songsgen.monitoring.checks import duration
from songsgen.monitoring.probes import Replication
from tests.conftest import REPO
from tests.db.live import hanging_migrate, killed_half_way
from tests.monitoring.conftest import aged, bearer, health, job

CHECKS = {"database", "migrations", "migrate", "backup", "replication (not configured)", "disk",
          "replicas (none configured)", "queue wait", "queue leases"}


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
    assert old.name in checks["backup"] and "30 h old (limit 26 h)" in checks["backup"]
    settings.HEALTH_BACKUP_MAX_AGE_HOURS = 31  # the limit is a setting
    assert health(client)[0] == 200


def test_no_backup_is_500_naming_backup(client, folders):
    status, checks = health(client)
    assert status == 500 and failing(checks) == {"backup"}
    assert "no backup of this database yet" in checks["backup"]


def test_unapplied_migration_is_500_naming_it(client, fresh_backup):
    call_command("migrate", "accounts", "0002", verbosity=0)  # one step back, as after deploying new code
    try:
        status, checks = health(client)
    finally:
        call_command("migrate", "accounts", verbosity=0)
    assert status == 500 and failing(checks) == {"migrations"}
    assert "1 migration(s) not applied: accounts.0003_add_username_lower_index" in checks["migrations"]
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
    assert "has waited 20 min (limit 15 min)" in checks["queue wait"]


def test_small_and_large_limits_are_said_in_units_that_fit(client, fresh_backup, settings):
    settings.HEALTH_BACKUP_MAX_AGE_HOURS = 0.01  # 36 s
    aged(fresh_backup, hours=45 / 3600)
    settings.HEALTH_QUEUE_MAX_WAIT_SECONDS = 30
    job(queued_at=timezone.now() - timedelta(seconds=45))
    settings.HEALTH_LEASE_GRACE_SECONDS = 7200
    job("running", worker_id="w1", lease_expires_at=timezone.now() - timedelta(hours=3))
    status, checks = health(client)
    assert status == 500 and failing(checks) == {"backup", "queue wait", "queue leases"}
    assert re.search(r"is 4[5-9](\.\d)? s old \(limit 36 s\)", checks["backup"]), checks["backup"]
    assert re.search(r"has waited 4[5-9](\.\d)? s \(limit 30 s\)", checks["queue wait"]), checks["queue wait"]
    assert "past their lease by more than 2 h (job" in checks["queue leases"]


def replica_days_behind(connection) -> Replication:
    return Replication(configured=True, lag_seconds=3 * 86400 + 60)


def test_a_lag_of_days_is_said_in_days(client, fresh_backup, settings):
    settings.REPLICATION_STATUS = "tests.monitoring.test_health.replica_days_behind"
    settings.HEALTH_REPLICATION_MAX_LAG_SECONDS = 2 * 86400
    assert health(client)[1]["replication"] == "Unavailable: the replica is 3 d behind (limit 2 d)."
    settings.HEALTH_REPLICATION_MAX_LAG_SECONDS = 3 * 86400  # 3 d 1 min over a limit of 3 d: not "3 d (limit 3 d)"
    assert health(client)[1]["replication"] == "Unavailable: the replica is 3.001 d behind (limit 3 d)."


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0 s"), (0.004, "0.004 s"), (0.5, "0.5 s"), (36, "36 s"), (119, "119 s"), (150, "2.5 min"),
    (900, "15 min"), (7200, "2 h"), (36 * 3600, "36 h"), (3 * 86400, "3 d"), (400 * 86400, "400 d"),
])
def test_a_duration_takes_the_largest_unit_it_has_two_of(seconds, shown):
    assert duration(seconds) == shown


def test_a_duration_beside_its_limit_never_reads_the_same():
    assert duration(26.04 * 3600, beside=26 * 3600) == "26.04 h"
    assert duration(40, beside=36) == "40 s"
    assert duration(25 * 3600, beside=26 * 3600) == "25 h"


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

        from songsgen.db.pgconn import connect_params

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
    else:  # Litestream replicates SQLite only: nothing to report on PostgreSQL, as /metrics says (configured 0)
        assert status == 200 and checks["replication (not configured)"] == "OK"
    settings.REPLICATION_STATUS = "tests.monitoring.test_health.replica_behind"
    status, checks = health(client)
    assert status == 500 and checks["replication"] == "Unavailable: the replica is 2 min behind (limit 60 s)."
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
