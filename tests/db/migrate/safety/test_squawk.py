"""squawk, the second judge of the safety checks on PostgreSQL: found, configured, merged with ours without repeats.

The deliberately unsafe migration lives in the test-only app tests/unsafe_fixture (installed through
tests/settings_unsafe.py in the subprocess only).
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from songsgen.db.exceptions import SquawkError
from songsgen.db.migrate.safety import squawk
from songsgen.db.migrate.safety.check import check_plan, merge_squawk
from songsgen.db.problems import Problem
from tests.conftest import REPO
from tests.factories import make_song, make_user

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="squawk judges PostgreSQL SQL")
OURS = ("accounts", "songs", "queueing")


def test_binary_found_beside_the_interpreter_first(tmp_path, monkeypatch):
    fake = tmp_path / "squawk"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert squawk.binary() == str(fake)
    fake.unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert squawk.binary() is None


def test_installed_and_config_valid():
    """The pinned squawk-cli is installed and accepts every rule name in .squawk.toml."""
    assert squawk.binary(), "squawk-cli is in requirements.txt: pip install -r requirements.txt"
    report = squawk.run('CREATE INDEX "i" ON "t" ("a");\n', config=squawk.config_path())
    assert [v["rule_name"] for v in report] == ["require-concurrent-index-creation"]
    assert squawk.run('CREATE TABLE "t" ("a" varchar(10) NOT NULL);\n', config=squawk.config_path()) == []


def test_a_broken_config_is_an_error_not_a_crash(tmp_path):
    bad = tmp_path / "squawk.toml"
    bad.write_text('excluded_rules = ["no-such-rule"]\n')
    with pytest.raises(SquawkError, match="no-such-rule"):
        squawk.run("SELECT 1;\n", config=bad)


def _violation(rule: str, blocking: bool = True) -> squawk.Violation:
    return squawk.Violation(rule, "message", "help", 'CREATE INDEX "i" ON "songs_song" ("title");', blocking)


def test_merge_keeps_ours_once_and_notes_the_agreement():
    ours = Problem("INDEX_NOT_CONCURRENT", "songs.0009_x", "builds index i without CONCURRENTLY", source="songsgen")
    merged = merge_squawk([ours], [_violation("require-concurrent-index-creation"),
                                    _violation("constraint-missing-not-valid")], "songs.0009_x")
    assert [(f.code, f.source) for f in merged] == [
        ("INDEX_NOT_CONCURRENT", "songsgen"), ("squawk:constraint-missing-not-valid", "squawk")]
    assert merged[0].agreed == ("squawk:require-concurrent-index-creation",)
    assert "also squawk:require-concurrent-index-creation" in str(merged[0])
    assert merged[1].as_dict()["fix"] == squawk.FIXES["constraint-missing-not-valid"]
    assert "hint" not in merged[1].as_dict()


def test_merge_keeps_a_blocking_squawk_finding_over_a_note():
    note = Problem("CREATE_INDEX", "songs.0009_x", "CREATE INDEX locks table", False, source="django-migration-linter")
    merged = merge_squawk([note], [_violation("require-concurrent-index-creation")], "songs.0009_x")
    assert [f.code for f in merged] == ["CREATE_INDEX", "squawk:require-concurrent-index-creation"]
    assert merged[1].blocking and "https://squawkhq.com/docs/" not in merged[1].fix  # our own fix text


@postgres_only
@pytest.mark.django_db
def test_missing_binary_is_a_finding(monkeypatch):
    monkeypatch.setattr(squawk, "binary", lambda: None)
    executor = MigrationExecutor(connection)
    migration = executor.loader.get_migration("songs", "0005_add_song_genre_index")
    state = executor.loader.project_state(("songs", "0005_add_song_genre_index"), at_end=False)
    findings = check_plan(connection, [(migration, False)], state, use_linter=False)
    assert [(f.code, f.blocking) for f in findings] == [("SQUAWK_MISSING", True)]
    assert "pip install -r requirements.txt" in findings[0].fix


class _NothingBig:
    """Our judgment for empty tables: every size-sensitive rule is overruled."""

    def small(self, table: str) -> str:
        return f"{table} is empty"

    def widening(self, table: str, column: str) -> None:
        return None


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_lock_rule_on_a_small_table_is_a_note_saying_why(settings):
    """squawk cannot see a table's size; ours overrules it below SONGSGEN_MIGRATE_BIG_TABLE_ROWS, and says so."""
    from django.db import models
    from django.db.migrations import Migration, operations

    for i in range(3):
        make_song(title=f"song {i}")
    migration = Migration("0901_probe", "songs")
    migration.operations = [operations.AddIndex("song", models.Index(fields=["title"], name="songs_title_probe"))]
    state = MigrationExecutor(connection)._create_project_state(with_applied_migrations=True)
    [found] = check_plan(connection, [(migration, False)], state, use_linter=False)
    assert (found.code, found.blocking) == ("squawk:require-concurrent-index-creation", False)
    assert found.detail.startswith("squawk require-concurrent-index-creation overruled: songs_song has 3 rows, "
                                   "below 100,000 (SONGSGEN_MIGRATE_BIG_TABLE_ROWS)")


@postgres_only
@pytest.mark.django_db(transaction=True)  # the SQL is collected as sqlmigrate does, outside a transaction
def test_project_migrations_pass_squawk_one_by_one():
    """Each project migration, as if applied to a database holding the ones before it (empty tables)."""
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    ours = [key for leaf in graph.leaf_nodes() for key in graph.forwards_plan(leaf) if key[0] in OURS]
    blocking = []
    for key in dict.fromkeys(ours):
        migration = executor.loader.get_migration(*key)
        state = executor.loader.project_state(key, at_end=False)
        blocking += [v for v in squawk.judge(connection, migration, state, _NothingBig()) if v.blocking]
    assert blocking == []


def _check_safety(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "migrate", "--check-safety", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )


@postgres_only
def test_project_migrations_pass_both_judges_from_zero(subprocess_env, empty_pg_database, tmp_path):
    env = dict(subprocess_env, DATABASE_URL=empty_pg_database, SONGSGEN_DATA_DIR=str(tmp_path))
    result = _check_safety(env, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "safe"
    assert [f for f in report["findings"] if f["blocking"]] == []


@postgres_only
def test_unsafe_migration_is_flagged_by_both_judges(subprocess_env, tmp_path):
    user = make_user()
    for i in range(3):
        make_song(user=user, title=f"song {i}")
    env = dict(subprocess_env, DJANGO_SETTINGS_MODULE="tests.settings_unsafe", SONGSGEN_DATA_DIR=str(tmp_path),
               SONGSGEN_MIGRATE_BIG_TABLE_ROWS="2")
    result = _check_safety(env, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    report = json.loads(result.stdout)
    findings = [f for f in report["findings"] if f["migration"] == "unsafe_fixture.0001_unsafe_song_change"]
    by_code = {f["code"]: f for f in findings}
    assert {"INDEX_NOT_CONCURRENT", "NOT_NULL"} <= set(by_code)
    assert by_code["INDEX_NOT_CONCURRENT"]["source"] == "songsgen"
    # squawk said the same about the index: kept once, as ours, with squawk's agreement.
    assert by_code["INDEX_NOT_CONCURRENT"]["agreed"] == ["squawk:require-concurrent-index-creation"]
    assert "squawk:require-concurrent-index-creation" not in by_code
    assert by_code["NOT_NULL"]["agreed"] == ["squawk:adding-required-field"]
    # The CHECK in RunSQL is invisible to our operation checks; squawk sees it on a big table.
    check = by_code["squawk:constraint-missing-not-valid"]
    assert check["source"] == "squawk" and check["blocking"]
    assert "unsafe_song_title_set" in check["detail"] and "NOT VALID" in check["fix"]
    # Printed once each on stderr, not twice.
    assert result.stderr.count("require-concurrent-index-creation") == 1

