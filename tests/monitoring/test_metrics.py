"""/metrics: parsed by the Prometheus text parser, values equal to the database's rows and files, read at
scrape time, and every query cheap (indexed, bounded, never over the songs table)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Min
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from queueing.models import GenerationQueue
from songsgen.db.backup import backup_created
from songsgen.db.migrate import marker
from tests.monitoring.conftest import bearer, job, scrape, value


@pytest.fixture
def queue_rows():
    """Jobs in every status, some finished within five minutes, some within the hour, one stuck."""
    now = timezone.now()
    for _ in range(3):
        job(queued_at=now - timedelta(minutes=4))
    job("running", worker_id="w1", lease_expires_at=now + timedelta(seconds=60), started_at=now)
    job("running", worker_id="dead", lease_expires_at=now - timedelta(minutes=10), started_at=now - timedelta(hours=1))
    for seconds in (1.5, 4.0, 45.0):  # done within five minutes, each taking `seconds`
        job("done", started_at=now - timedelta(minutes=2, seconds=seconds), completed_at=now - timedelta(minutes=2))
    job("done", started_at=now - timedelta(minutes=31), completed_at=now - timedelta(minutes=30))  # 60 s, 30 min ago
    job("done", started_at=now - timedelta(days=3), completed_at=now - timedelta(days=3))  # outside every window
    job("failed", completed_at=now - timedelta(minutes=1))
    job("failed", completed_at=now - timedelta(minutes=50))
    job("cancelled", completed_at=now)


def test_values_match_the_database(client, fresh_backup, queue_rows, folders, run):
    assert run("migrate", "-v0").returncode == 0  # the safe migrate, typed: records its result
    families = scrape(client)
    now = timezone.now()

    for status in GenerationQueue.Status.values:
        assert value(families, "songsgen_queue_jobs", status=status) == GenerationQueue.objects.filter(
            status=status).count()
    oldest = GenerationQueue.objects.filter(status="queued").aggregate(oldest=Min("queued_at"))["oldest"]
    assert value(families, "songsgen_queue_oldest_queued_age_seconds") == pytest.approx(
        (now - oldest).total_seconds(), abs=5)
    for outcome, window, span in (("done", "5m", 5), ("done", "1h", 60), ("failed", "5m", 5), ("failed", "1h", 60)):
        expected = GenerationQueue.objects.filter(status=outcome, completed_at__gte=now - timedelta(minutes=span))
        assert value(families, "songsgen_queue_jobs_finished", outcome=outcome, window=window) == expected.count()
    assert value(families, "songsgen_queue_jobs_past_lease") == 1
    durations = families["songsgen_queue_job_duration_seconds"]
    assert durations.type == "histogram"  # a gauge histogram: the recent jobs, not a running total
    assert value(families, "songsgen_queue_job_duration_seconds_bucket", le="2.0") == 1
    assert value(families, "songsgen_queue_job_duration_seconds_bucket", le="5.0") == 2
    assert value(families, "songsgen_queue_job_duration_seconds_bucket", le="60.0") == 4
    assert value(families, "songsgen_queue_job_duration_seconds_bucket", le="+Inf") == 4
    assert value(families, "songsgen_queue_job_duration_seconds_gsum") == pytest.approx(1.5 + 4 + 45 + 60)

    assert value(families, "songsgen_backup_count") == 1
    assert value(families, "songsgen_backup_last_size_bytes") == fresh_backup.stat().st_size
    assert value(families, "songsgen_backup_last_timestamp_seconds") == backup_created(fresh_backup.name).timestamp()
    assert value(families, "songsgen_backup_age_seconds") == pytest.approx(
        (now - backup_created(fresh_backup.name)).total_seconds(), abs=5)

    assert value(families, "songsgen_migrate_last_result", status="nothing-to-do") == 1
    assert value(families, "songsgen_migrate_last_success") == 1
    assert 0 < value(families, "songsgen_migrate_last_duration_seconds") < 120
    assert value(families, "songsgen_migrate_last_longest_lock_seconds") == 0  # nothing to do: no lock taken
    assert value(families, "songsgen_migrate_last_online_rebuilds") == 0
    assert value(families, "songsgen_migrate_last_timestamp_seconds") == pytest.approx(now.timestamp(), abs=120)
    assert value(families, "songsgen_migrate_in_progress") == 0
    assert value(families, "songsgen_migrate_interrupted") == 0

    if connection.vendor == "sqlite":
        live = Path(connection.settings_dict["NAME"])
        assert value(families, "songsgen_database_size_bytes") == live.stat().st_size
        assert value(families, "songsgen_database_wal_size_bytes") == Path(f"{live}-wal").stat().st_size
    else:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            assert value(families, "songsgen_database_size_bytes") == pytest.approx(cursor.fetchone()[0], rel=0.05)
    assert 0 < value(families, "songsgen_disk_free_bytes", folder="backups") < 2**62
    assert value(families, "songsgen_backup_room_needed_bytes") > value(families, "songsgen_database_size_bytes")

    assert value(families, "songsgen_replication_configured") == 0
    assert "songsgen_replication_lag_seconds" not in families  # absent until replication exists
    assert {s.labels["probe"] for s in families["songsgen_probe_success"].samples if s.value != 1} == set()


def test_a_failed_migrate_is_recorded(client, folders, run):
    result = run("migrate", "migrations_fixture", "0003", extra={"DJANGO_SETTINGS_MODULE": "tests.settings_fixture",
                                                                 "SONGSGEN_FIXTURE_MODE": "fail"})
    try:
        assert result.returncode == 1, result.stderr  # failed and rolled back
        families = scrape(client)
        assert value(families, "songsgen_migrate_last_result", status="restored") == 1
        assert value(families, "songsgen_migrate_last_success") == 0
    finally:
        run("migrate", "migrations_fixture", "zero", "--plain", "-v0",
            extra={"DJANGO_SETTINGS_MODULE": "tests.settings_fixture"})


def test_read_at_scrape_time_never_stale(client, folders):
    before = scrape(client)
    assert value(before, "songsgen_queue_jobs", status="queued") == 0
    assert "songsgen_migrate_last_result" not in before and value(before, "songsgen_backup_count") == 0
    job()
    marker.write(connection, None, ["accounts.0003_example"], set())  # a migrate's marker, nobody holding the lock
    after = scrape(client)
    assert value(after, "songsgen_queue_jobs", status="queued") == 1
    assert value(after, "songsgen_migrate_interrupted") == 1


def test_openmetrics_when_asked(client, folders):
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0", **bearer())
    assert response["Content-Type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(response.content.decode())}
    assert families["songsgen_queue_job_duration_seconds"].type == "gaugehistogram"


def full_scans(plan: str) -> list[str]:
    """SQLite plan lines that read a whole table or a whole index (SCAN); only SEARCH, a range, may touch
    a table. A SCAN of a subquery, a CTE or a constant row reads what such a search produced."""
    derived = ("subquery", "(subquery", "capped", "levels", "CONSTANT ROW")
    return [line for line in plan.splitlines() if line.startswith("SCAN ") and not line[5:].startswith(derived)]


def _plan(sql: str, params: tuple) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return "\n".join(row[-1] for row in cursor.fetchall())
        # With sequential scans priced out, a plan that still has one has no index to use.
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")


def test_a_scrape_reads_no_song_and_every_query_uses_an_index(client, fresh_backup, queue_rows):
    with CaptureQueriesContext(connection) as captured:
        scrape(client)
    queries = [q["sql"] for q in captured.captured_queries]
    assert queries and not [q for q in queries if "songs_song" in q]
    for sql in queries:
        # Every COUNT is over a LIMITed subquery: its cost has a ceiling whatever the table holds.
        assert "COUNT(" not in sql or re.search(r"COUNT\(\*\) FROM \(SELECT .* LIMIT \d+\)", sql), sql
        if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
            continue  # PRAGMA page_count and the like
        plan = _plan(sql, ())
        if connection.vendor == "sqlite":
            assert not full_scans(plan), f"{sql}\n{plan}"
        else:
            assert "Seq Scan on queueing_generationqueue" not in plan, f"{sql}\n{plan}"
