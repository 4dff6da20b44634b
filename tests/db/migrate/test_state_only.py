"""Verification after our own DROP_COLUMN advice (a state-only RemoveField), the crash marker after a failed drop,
and a clean database verifying without a warning, on a database of the test's own (tests/db/corpora)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.db.corpora import fixtures
from tests.db.corpora.harness import ROWS, Case, Database, environment, migrate

ENGINE = fixtures.ENGINE
base_url, case_db = fixtures.base_url, fixtures.case_db
ADVICE = Case("zerodowntime", "good_flow_drop_column_with_constraints", "0001_initial")
DROP = Case("zerodowntime", "good_flow_drop_table_with_constraints", "0001_initial")


def _seeded(case: Case, db: Database, data) -> dict[str, str]:
    env = environment(case, db.url, data)
    done = subprocess.run([sys.executable, "-m", "tests.db.corpora.seed", case.app, str(ROWS), case.seed_at or ""],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_a_clean_database_verifies_without_a_warning(case_db, tmp_path):
    """Our own indexes are all known: the foreign key's index and the PostgreSQL trigram indexes."""
    env = environment(ADVICE, case_db.url, tmp_path)
    done = _manage(env, "dbcheck", "--schema")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[warning]" not in done.stdout + done.stderr and "[error]" not in done.stdout + done.stderr


def test_our_own_drop_column_advice_verifies(case_db, tmp_path):
    """A RemoveField in SeparateDatabaseAndState's state_operations keeps the column: expected, never an error."""
    env = _seeded(ADVICE, case_db, tmp_path)
    step = migrate(env, ADVICE.app, "0002")
    assert step.returncode == 0, step.stderr[-3000:]
    assert step.report["status"] == "ok"
    errors = [p for p in step.report["verification"] if p["severity"] == "error"]
    assert errors == []
    kept = [p["detail"] for p in step.report["verification"] if "main_id" in p["detail"]]
    assert len(kept) == 1 and "removed from the migration state only" in kept[0]
    assert f"{ADVICE.app}.0002_forget_constraints" in kept[0]
    # The next run, and dbcheck, still know why the column is there.
    check = _manage(env, "dbcheck", "--schema")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "column main_id is kept in the database" in check.stdout + check.stderr
    assert case_db.rows(["drop_col_child"]) == {"drop_col_child": ROWS}
    # Only what a state-only operation removed is expected: a column added behind the state's back is not.
    _execute(case_db, "ALTER TABLE drop_col_child ADD COLUMN stray integer")
    check = _manage(env, "dbcheck", "--schema")
    assert check.returncode != 0
    out = check.stdout + check.stderr
    assert "[error] schema: drop_col_child: column stray is not in the migration state" in out
    assert "[error] schema: drop_col_child: column main_id" not in out


def _execute(db: Database, sql: str) -> None:
    if db.url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(db.url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql)
        return
    import psycopg

    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(sql)


@pytest.mark.skipif(ENGINE != "sqlite", reason="SQLite: a dropped table's rows checked at each migration's end")
def test_a_failed_drop_leaves_no_marker(case_db, tmp_path):
    """The advice, then a drop of the table the kept column points at: the run ends, no marker refuses the next."""
    env = _seeded(DROP, case_db, tmp_path)
    step = migrate(env, DROP.app, "--allow-unsafe")
    assert step.returncode in (1, 2), step.stderr[-3000:]
    assert list(tmp_path.glob("migrate-in-progress-*")) == []
    again = migrate(env, DROP.app, "0002")  # whatever it finds, it runs: not refused as an interrupted migrate
    assert "A previous migrate" not in again.stderr and again.report.get("plan"), again.stderr[-3000:]


@pytest.mark.skipif(ENGINE != "sqlite", reason="SQLite: a dropped table's rows checked at each migration's end")
def test_resume_restore_after_a_dead_drop_finishes(case_db, tmp_path):
    """A run that died after its drop committed (its marker written as the dead run left it, the plan applied by
    Django's own migrate up to the failure): `--resume-restore` does not re-create the dropped table empty, says
    what was dropped, clears the marker, and the next migrate is not refused as interrupted."""
    env = _seeded(DROP, case_db, tmp_path)
    write = ("import django; django.setup(); from django.db import connection; "
             "from django.db.migrations.executor import MigrationExecutor; from songsgen.db.migrate import marker; "
             "marker.write(connection, None, [], set(MigrationExecutor(connection).loader.applied_migrations))")
    done = subprocess.run([sys.executable, "-c", write], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    plain = _manage(env, "migrate", DROP.app, "--plain")
    assert plain.returncode != 0 and "invalid foreign key" in plain.stderr  # the drop committed, then failed
    assert list(tmp_path.glob("migrate-in-progress-*"))
    resume = _manage(env, "migrate", "--resume-restore")
    assert "Traceback" not in resume.stderr
    assert resume.returncode == 3, resume.stdout + resume.stderr  # the dropped rows cannot come back this way
    assert "DROPPED" in resume.stderr and "table drop_tbl_main" in resume.stderr
    assert "back as it was" not in resume.stdout + resume.stderr
    assert list(tmp_path.glob("migrate-in-progress-*")) == []
    again = migrate(env, DROP.app, "--allow-unsafe")
    # What stays is applied: nothing is left to do, and nothing refuses the run as interrupted.
    assert again.returncode == 0 and "A previous migrate" not in again.stderr, again.stderr[-3000:]
    assert again.report["status"] == "nothing-to-do"
