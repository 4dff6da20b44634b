"""/health and /metrics tell the same story about a running `manage.py replicate`; both take a trailing slash."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.factories import make_user
from tests.monitoring.conftest import bearer, health, scrape, value


@pytest.mark.skipif(connection.vendor != "sqlite", reason="Litestream replicates SQLite only")
def test_a_running_replicate_is_configured_on_both_endpoints(client, env, fresh_backup):
    """It said "replication (not configured)" while /metrics gave replication configured, with its lag."""
    proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "replicate"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        checks: dict[str, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            make_user()  # a commit for Litestream to ship, so that it reports a sync
            status, checks = health(client)
            if checks.get("replication") == "OK":
                break
            time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert status == 200, checks
        assert "replication (not configured)" not in checks and checks["replication"] == "OK"
        families = scrape(client)
        assert value(families, "songsgen_replication_configured") == 1
        assert value(families, "songsgen_replication_lag_seconds") >= 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    # Stopped, and SONGSGEN_REPLICA_URL never set: both say not configured.
    assert "songsgen_replication_lag_seconds" not in scrape(client)
    assert "replication (not configured)" in health(client)[1]


@pytest.mark.parametrize("endpoint", ["/health/", "/metrics/"])
def test_a_trailing_slash_answers_as_without_it(client, folders, settings, endpoint):
    """`/health/` was a 404 while `/health` answered."""
    assert client.get(endpoint, **bearer()).status_code in (200, 500)  # /health: 500 for the missing backup
    assert client.get(endpoint).status_code == 401  # the token rule is the same
    assert client.get(endpoint, **bearer("wrong-token")).status_code == 401
    settings.METRICS_TOKEN, settings.DEBUG = "", False
    assert client.get(endpoint).status_code == 404
