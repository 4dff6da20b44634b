"""The JSON reports keep the keys operators read; each problem list is `Problem.as_dict()` (`report_format` 2)."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from songsgen.boundary import ExitCode
from songsgen.db.migrate import lastrun
from songsgen.db.migrate.run import Report
from songsgen.db.migrate.runstatus import RECORDED, SUCCESS, RunStatus

# `migrate --json`'s keys before report_format 2, and each findings[] entry's.
MIGRATE_KEYS = {
    "database", "vendor", "status", "plan", "findings", "backup", "guard", "applied", "verification",
    "failed_migration", "error", "seconds", "rolled_back", "unapplied", "reversed_operations", "stays",
    "longest_lock_seconds", "attempts", "lock_waits", "rehearsal", "online", "replicas",
}
FINDING_KEYS = {"code", "migration", "detail", "source", "blocking", "agreed", "fix"}
PROBLEM_KEYS = {"severity", "check", "subject", "detail"}
BACKUPCHECK_KEYS = {"name", "ok", "errors", "size", "database_size", "format", "created", "age_seconds", "tables"}


def test_run_status_values_are_the_strings_operators_read():
    assert {status.value for status in RunStatus} == {
        "pending", "ok", "nothing-to-do", "safe", "rehearsed", "refused", "restored", "failed",
        "resume-restored", "snapshot-restored",
    }
    assert RECORDED == {"ok", "nothing-to-do", "restored", "failed", "resume-restored", "snapshot-restored"}
    assert SUCCESS == RECORDED - {"restored", "failed"}


@pytest.mark.django_db
def test_the_last_run_record_holds_the_status_as_its_plain_string(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    for status in RunStatus:
        lastrun.path(connection).unlink(missing_ok=True)
        lastrun.record(connection, Report(database="default", vendor=connection.vendor, status=status))
        recorded = json.loads(lastrun.path(connection).read_text()) if lastrun.path(connection).exists() else None
        if status in RECORDED:
            assert recorded is not None and type(recorded["status"]) is str and recorded["status"] == status.value
            assert recorded["success"] is (status in SUCCESS)
        else:  # refusals, safety checks, rehearsals: the live database was not migrated
            assert recorded is None, status


@pytest.mark.django_db(transaction=True)
def test_migrate_json_keeps_its_keys_and_each_finding_is_a_problem(migrate):
    assert migrate("migrations_fixture", "0003").returncode == 0
    result = migrate("--check-safety", "--json")  # 0004 drops a column of a table that exists now
    assert result.returncode == ExitCode.REFUSED, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == MIGRATE_KEYS | {"report_format"} and report["report_format"] == 2
    assert report["status"] == RunStatus.REFUSED.value
    (finding,) = [f for f in report["findings"] if f["code"] == "DROP_COLUMN"]
    assert FINDING_KEYS | PROBLEM_KEYS <= set(finding)
    assert finding["migration"] == finding["subject"] == "migrations_fixture.0004_drop_qty"
    assert (finding["check"], finding["severity"], finding["blocking"]) == ("DROP_COLUMN", "error", True)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="backupcheck checks SQLite backups")
@pytest.mark.django_db(transaction=True)
def test_backupcheck_json_keeps_errors_and_lists_the_problems(manage, subprocess_env, tmp_path):
    damaged = tmp_path / "songs-2026-01-01-000000.sqlite3"
    damaged.write_bytes(b"not a database at all" * 100)
    env = dict(subprocess_env, SONGSGEN_BACKUP_DIR=str(tmp_path / "backups"))
    result = manage("backupcheck", "-I", str(damaged), "--json", env=env)
    assert result.returncode == ExitCode.FAILED, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == BACKUPCHECK_KEYS | {"report_format", "problems"} and report["report_format"] == 2
    assert report["ok"] is False and report["errors"] == [p["detail"] for p in report["problems"]]
    assert report["problems"] and all(set(p) == PROBLEM_KEYS for p in report["problems"])
    assert report["problems"][0]["subject"] == damaged.name and report["problems"][0]["severity"] == "error"
