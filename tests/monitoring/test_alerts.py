"""docs/alerts.yml: well-formed Prometheus rules over metrics /metrics really exports, with the /health limits;
`promtool check rules` as well where promtool is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from django.conf import settings as project_settings

from songsgen.db import replicas
from songsgen.db.replicas import ReplicaState
from songsgen.monitoring.probes import Replication
from tests.conftest import REPO
from tests.monitoring.conftest import job, scrape

RULES = REPO / "docs" / "alerts.yml"
REQUIRED = {
    "SongsgenBackupTooOld", "SongsgenReplicationLagging", "SongsgenMigrateInterrupted", "SongsgenQueueStalled",
    "SongsgenJobFailureRate", "SongsgenNoRoomForBackup", "SongsgenReadReplicaSkipped",
}


def rules() -> dict[str, dict]:
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"]}


def replica_in_step(connection) -> Replication:
    return Replication(configured=True, lag_seconds=0.5, last_sync=datetime.now(UTC))


def test_every_rule_is_complete_and_the_required_ones_are_there():
    found = rules()
    assert REQUIRED <= set(found)
    for name, rule in found.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", "0m"))), name


def test_thresholds_are_the_health_limits():
    found = rules()
    hours = project_settings.HEALTH_BACKUP_MAX_AGE_HOURS
    assert f"songsgen_backup_age_seconds > {hours:g} * 3600" in found["SongsgenBackupTooOld"]["expr"]
    lag = project_settings.HEALTH_REPLICATION_MAX_LAG_SECONDS
    assert f"songsgen_replication_lag_seconds > {lag:g}" in found["SongsgenReplicationLagging"]["expr"]
    wait = project_settings.HEALTH_QUEUE_MAX_WAIT_SECONDS
    replica_lag = project_settings.READ_REPLICA_MAX_LAG_SECONDS
    assert f"songsgen_replica_lag_seconds > {replica_lag:g}" in found["SongsgenReadReplicaSkipped"]["expr"]
    assert f"songsgen_queue_oldest_queued_age_seconds > {wait / 60:g} * 60" in found["SongsgenQueueStalled"]["expr"]


def test_every_metric_a_rule_names_is_exported(client, fresh_backup, run, settings, monkeypatch):
    assert run("migrate", "-v0").returncode == 0  # the last migrate's metrics
    # one read replica, 0.5 s behind (the replica tests run real ones: tests/db/read_replicas/)
    monkeypatch.setattr(replicas, "aliases", lambda: ["replica1"])
    monkeypatch.setattr(replicas, "probe", lambda alias: ReplicaState(alias, answered=True, lag_seconds=0.5))
    job("done")
    settings.REPLICA_URL = "file:///replica"
    settings.REPLICATION_STATUS = "tests.monitoring.test_alerts.replica_in_step"
    samples = [sample for family in scrape(client).values() for sample in family.samples]
    exported = {sample.name for sample in samples}
    for name, rule in rules().items():
        named = set(re.findall(r"\bsongsgen_[a-z_]+", rule["expr"]))
        assert named and named <= exported, (name, named - exported)
        for label, wanted in re.findall(r'(\w+)="([^"]+)"', rule["expr"]):  # label values that exist
            assert any(sample.labels.get(label) == wanted for sample in samples), (name, label, wanted)


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(Path(RULES))], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
