"""runworker's flags and queue_stats, through call_command and as real processes."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from queueing.models import GenerationQueue
from tests.factories import make_song


@pytest.mark.parametrize(
    "args, message",
    [
        (["--concurrency", "0"], "must be 1 or more, got 0"),
        (["--max-jobs", "many"], "expected a whole number, got 'many'"),
        (["--queue-poll", "0"], "must be more than 0"),
        (["--queue-poll", "soon"], "is not a number of seconds"),
    ],
)
def test_runworker_rejects_bad_flags(manage, args, message):
    result = manage("runworker", "--burst", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_runworker_names_a_bad_generator_setting(manage, subprocess_env):
    env = {**subprocess_env, "SONGSGEN_GENERATOR": "queueing.generators.Missing"}
    result = manage("runworker", "--burst", env=env)
    assert result.returncode == 1
    assert "SONGSGEN_GENERATOR='queueing.generators.Missing' cannot be imported" in result.stderr


def test_runworker_burst_generates_real_audio(manage, subprocess_env, tmp_path):
    song = make_song()
    env = {**subprocess_env, "SONGSGEN_DATA_DIR": str(tmp_path)}
    result = manage("runworker", "--burst", env=env)
    assert result.returncode == 0, result.stderr
    assert "stopped after 1 job(s)" in result.stdout
    song.refresh_from_db()
    assert song.status == "completed"
    assert (tmp_path / "media" / song.audio_file_path).stat().st_size > 1000


@pytest.mark.django_db
def test_queue_stats_counts_ages_and_throughput():
    now = timezone.now()
    queued = [make_song() for _ in range(3)]
    GenerationQueue.objects.filter(song=queued[0]).update(queued_at=now - timedelta(minutes=5))
    done, failed, old_failure = make_song(), make_song(), make_song()
    GenerationQueue.objects.filter(song=done).update(status="done", completed_at=now - timedelta(seconds=30))
    GenerationQueue.objects.filter(song=failed).update(status="failed", retry_count=3, completed_at=now)
    GenerationQueue.objects.filter(song=old_failure).update(status="failed", retry_count=3,
                                                            completed_at=now - timedelta(hours=2))
    out = StringIO()
    call_command("queue_stats", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["counts"] == {"queued": 3, "running": 0, "done": 1, "failed": 2, "cancelled": 0}
    assert 299 <= data["oldest_queued_age_seconds"] <= 330
    assert (data["failed_last_hour"], data["done_last_hour"], data["done_last_minute"]) == (1, 1, 1)
    table = StringIO()
    call_command("queue_stats", stdout=table)
    assert "queued" in table.getvalue() and "5m" in table.getvalue()
    capped = GenerationQueue.objects.stats(cap=2)
    assert capped.counts["queued"] == 2  # counting stops at the cap


@pytest.mark.django_db
def test_claim_statement_reads_the_index_in_order_without_scanning():
    from django.db import connection, transaction

    for _ in range(30):
        make_song()
    sql = GenerationQueue.objects.claim_sql()
    adapt = connection.ops.adapt_datetimefield_value
    now = timezone.now()
    params = ["running", "w", adapt(now), adapt(now), "queued", adapt(now), 4]
    with transaction.atomic(), connection.cursor() as cur:
        if connection.vendor == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = "\n".join(str(row[-1]) for row in cur.fetchall())
            assert "TEMP B-TREE" not in plan.upper(), plan
            assert "SCAN queueing_generationqueue" not in plan, plan  # no full scan of the table
            assert "USING INTEGER PRIMARY KEY" in plan, plan
        else:
            cur.execute("SET LOCAL enable_seqscan = off")
            cur.execute("SET LOCAL enable_sort = off")
            cur.execute("EXPLAIN " + sql, params)
            plan = "\n".join(row[0] for row in cur.fetchall())
            assert "Sort" not in plan, plan
        assert "queue_claim" in plan or "queue_status_order" in plan, plan
