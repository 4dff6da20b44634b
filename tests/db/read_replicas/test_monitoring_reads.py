"""/metrics, /health and dbcheck read their counts from a usable replica, seen in the replica's own statement log."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from django.db import connection

from tests.devserver import dev_server
from tests.pgreplica import Replica

REPO = Path(__file__).resolve().parents[3]


@contextmanager
def statements_logged(replica: Replica) -> Iterator[None]:
    """log_statement = all on the replica while inside (its log is the file pg_ctl writes)."""
    with psycopg.connect(replica.url("postgres"), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with psycopg.connect(replica.url("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET log_statement")
            conn.execute("SELECT pg_reload_conf()")


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as failed:  # /health answers 500 when a check fails: its body still counts
        return str(failed.read().decode())


def _logged_during(replica: Replica, action) -> str:  # type: ignore[no-untyped-def]
    """What the replica logged while `action` ran (the statements it was sent)."""
    start = replica.log.stat().st_size
    action()
    return replica.log.read_bytes()[start:].decode(errors="replace")


def test_metrics_health_and_dbcheck_read_counts_on_the_replica(replica, replica_env):
    """With a usable replica the scrape's queue counts, the queue checks of /health and dbcheck's orphan and plan
    reads go to it, so monitoring does not load the primary; the checks about the primary stay there."""
    replica.wait_caught_up()
    table = "queueing_generationqueue"
    with statements_logged(replica), dev_server(replica_env) as base:
        scrape = {}
        logged = _logged_during(replica, lambda: scrape.update(text=_get(f"{base}/metrics")))
        assert "songsgen_queue_jobs{" in scrape["text"]
        assert f'FROM "{table}"' in logged and "COUNT(*)" in logged, logged[-2000:]
        logged = _logged_during(replica, lambda: _get(f"{base}/health?format=json"))
        assert "WITH RECURSIVE levels" in logged and '"lease_expires_at"' in logged, logged[-2000:]
        assert "cannot execute" not in logged  # the write check went to the primary, as a standby refuses writes
    with statements_logged(replica):
        run: dict[str, subprocess.CompletedProcess[str]] = {}
        logged = _logged_during(replica, lambda: run.update(done=subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "dbcheck", "--integrity", "--plans", "--json"],
            env=replica_env, cwd=REPO, capture_output=True, text=True, timeout=300)))
    assert '"database": "default"' in run["done"].stdout, run["done"].stderr
    assert "EXPLAIN (FORMAT JSON)" in logged and "NOT EXISTS" in logged, logged[-2000:]
    assert connection.vendor == "postgresql"
