"""PostgreSQL safe DDL (issue 25): what makemigrations writes for a big table (tests/safeddl_fixture, ~20,000
items, SONGSGEN_MIGRATE_BIG_TABLE_ROWS=1000) run by real `manage.py migrate` processes in its safe forms:
CONCURRENTLY, NOT VALID + VALIDATE, UNIQUE USING INDEX, SET NOT NULL through a validated CHECK."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.conftest import REPO, database_url_for
from tests.db.conftest import app_env, run_migrate

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql",
                                reason="safe DDL is PostgreSQL's (CONCURRENTLY, NOT VALID); SQLite rebuilds online")

ITEMS, OWNERS = 20_000, 100
ITEM, OWNER = "safeddl_fixture_item", "safeddl_fixture_owner"
BIG = {"SONGSGEN_MIGRATE_BIG_TABLE_ROWS": "1000"}
HUGE = {"SONGSGEN_MIGRATE_BIG_TABLE_ROWS": "1000000000"}  # no table is big: Django's own statements

# The application writing through the migrate: one insert and one update per transaction, each commit logged
# ("<id>\t<code>\t<updated id>\t<seconds the transaction took>") only once COMMIT returned.
WRITER = r"""
import os, random, sys, time
import psycopg
url, out, stop = sys.argv[1:4]
with psycopg.connect(url) as conn, open(out, "a", buffering=1) as log:
    ids = [r[0] for r in conn.execute("SELECT id FROM safeddl_fixture_item ORDER BY id LIMIT 2000")]
    conn.commit()
    n = 0
    while not os.path.exists(stop):
        n += 1
        code, target = f"w-{n}", random.choice(ids)
        tick = time.monotonic()
        try:
            new = conn.execute("INSERT INTO safeddl_fixture_item (name, size, code, owner_id) "
                               "VALUES (%s, %s, %s, %s) RETURNING id", (f"writer {n}", n % 7, code, 1 + n % 100))
            row = new.fetchone()
            conn.execute("UPDATE safeddl_fixture_item SET size = size + 1 WHERE id = %s", (target,))
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            log.write(f"ERROR\t{exc!r}\n")
            continue
        log.write(f"{row[0]}\t{code}\t{target}\t{time.monotonic() - tick:.6f}\n")
        time.sleep(0.002)
"""


def url() -> str:
    return database_url_for(connection.settings_dict)


@pytest.fixture
def sd_env(subprocess_env, tmp_path):
    return app_env(subprocess_env, tmp_path, "tests.settings_safeddl")


@pytest.fixture
def migrate(sd_env):
    """The safe migrate (typed, as a user would) in a subprocess, big tables from 1,000 rows."""

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return run_migrate({**sd_env, **BIG, **extra_env}, *args, timeout=120)

    yield run
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {ITEM}, {OWNER} CASCADE")
        cursor.execute("DELETE FROM django_migrations WHERE app = 'safeddl_fixture'")


def seeded(migrate, **rows: str) -> None:
    """The fixture app at 0001 (Django's plain migrate), 100 owners and 20,000 items with distinct codes, then
    `rows` (SQL statements that plant a bad row), analyzed: the size check reads pg_class.reltuples first."""
    result = migrate("safeddl_fixture", "0001", "--plain", "-v0")
    assert result.returncode == 0, result.stderr
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {OWNER} (id, name) SELECT g, 'owner ' || g FROM generate_series(1, {OWNERS}) g")
        cursor.execute(f"INSERT INTO {ITEM} (name, size, code, owner_id) SELECT 'item ' || g, g % 10, 'c' || g, "
                       f"1 + g % {OWNERS} FROM generate_series(1, {ITEMS}) g")
        for sql in rows.values():
            cursor.execute(sql)
        cursor.execute("ANALYZE")


def report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(result.stdout)


def catalog() -> dict[str, Any]:
    """The fixture tables' indexes, constraints and NOT NULLs as PostgreSQL's catalog has them."""
    connection.close()
    tables = f"('{ITEM}'::regclass, '{OWNER}'::regclass)"
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname, i.indisvalid, i.indisunique, pg_get_indexdef(i.indexrelid) "
                       f"FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid IN {tables}")
        indexes = {name: rest for name, *rest in cursor.fetchall()}
        cursor.execute("SELECT conname, contype, convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
                       f"WHERE conrelid IN {tables}")
        constraints = {name: rest for name, *rest in cursor.fetchall()}
        cursor.execute("SELECT attname, attnotnull, format_type(atttypid, atttypmod) FROM pg_attribute "
                       f"WHERE attrelid = '{ITEM}'::regclass AND attnum > 0 AND NOT attisdropped")
        columns = {name: rest for name, *rest in cursor.fetchall()}
    return {"indexes": indexes, "constraints": constraints, "columns": columns}


def applied() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM django_migrations WHERE app = 'safeddl_fixture'")
        return {row[0] for row in cursor.fetchall()}


def invalid_indexes() -> list[str]:
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                       "WHERE NOT i.indisvalid")
        return [row[0] for row in cursor.fetchall()]


class Writer:
    """A real process committing inserts and updates into the items table the whole time."""

    def __init__(self, folder: Path) -> None:
        self.out, self.stop_file = folder / "writer.log", folder / "writer.stop"
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, url(), str(self.out), str(self.stop_file)],
                                     cwd=REPO, stderr=subprocess.PIPE, text=True)
        self.wait_for(3)

    def lines(self) -> list[list[str]]:
        return [line.split("\t") for line in self.out.read_text().splitlines()] if self.out.exists() else []

    def wait_for(self, commits: int) -> None:
        deadline = time.monotonic() + 30
        while len([x for x in self.lines() if x[0] != "ERROR"]) < commits:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else "writer died"
            assert time.monotonic() < deadline, "the writer committed nothing"
            time.sleep(0.02)

    def stop(self) -> tuple[dict[int, str], dict[int, int], list[str], float]:
        """(id → code of each insert, id → updates of each row, errors, longest transaction in seconds)."""
        self.wait_for(len(self.lines()) + 3)  # it goes on writing after the migrate
        self.stop_file.write_text("stop")
        self.proc.wait(timeout=30)
        inserted: dict[int, str] = {}
        updated: dict[int, int] = {}
        errors, longest = [], 0.0
        for fields in self.lines():
            if fields[0] == "ERROR":
                errors.append(fields[1])
                continue
            inserted[int(fields[0])] = fields[1]
            updated[int(fields[2])] = updated.get(int(fields[2]), 0) + 1
            longest = max(longest, float(fields[3]))
        return inserted, updated, errors, longest

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def writer_in(tmp_path):
    started: list[Writer] = []

    def start() -> Writer:
        started.append(Writer(tmp_path))
        return started[-1]

    yield start
    for writer in started:
        writer.kill()


def sizes() -> dict[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, size FROM {ITEM} WHERE code NOT LIKE 'w-%' OR code IS NULL")
        return dict(cursor.fetchall())


def online(result: subprocess.CompletedProcess[str], migration: str = "") -> dict[str, list[str]]:
    """kind → the statements it ran, for each statement (of `migration`) the migrate replaced by its safe form."""
    found: dict[str, list[str]] = {}
    for entry in report(result)["online"]:
        assert entry["table"] == ITEM and entry["ran"], entry
        if entry["migration"].endswith(migration):
            found.setdefault(entry["kind"], []).extend(entry["ran"])
    return found


def test_forward_and_back_under_a_writer_in_safe_forms_keeping_every_commit(migrate, writer_in, record_property):
    """The point of safe DDL: the application keeps committing, and loses nothing, while a big table changes."""
    seeded(migrate)
    before = sizes()
    writer = writer_in()

    forward = migrate("safeddl_fixture", "0003", "--no-backup", "--json")
    assert forward.returncode == 0, forward.stderr
    assert report(forward)["status"] == "ok"
    ran = online(forward, "0002_as_makemigrations_writes_it")
    assert set(ran) == {"index", "check", "unique", "not_null", "fk", "column_fk"}
    assert any("CREATE INDEX CONCURRENTLY \"safeddl_item_name\"" in s for s in ran["index"])
    assert any("CONCURRENTLY" in s and "reviewer_id" in s for s in ran["index"])  # the new FK column's index
    assert [s.endswith("NOT VALID") for s in ran["check"]] == [True, False]
    assert "VALIDATE CONSTRAINT \"safeddl_item_size_positive\"" in ran["check"][1]
    assert any(s.startswith("CREATE UNIQUE INDEX CONCURRENTLY") for s in ran["unique"])
    assert any("UNIQUE USING INDEX \"safeddl_item_code_unique\"" in s for s in ran["unique"])
    assert any("CHECK (\"code\" IS NOT NULL) NOT VALID" in s for s in ran["not_null"])
    assert any(s.endswith("SET NOT NULL") for s in ran["not_null"])
    assert any(s.endswith("NOT VALID") and "FOREIGN KEY (\"owner_id\")" in s for s in ran["fk"])
    assert any(s.endswith("NOT VALID") and "FOREIGN KEY (\"reviewer_id\")" in s for s in ran["column_fk"])
    assert not [f for f in report(forward)["findings"] if f["blocking"]]
    dropped = online(forward, "0003_drop_name_index")
    assert dropped == {"drop_index": ['DROP INDEX CONCURRENTLY IF EXISTS "safeddl_item_name"']}
    assert applied() == {"0001_create_item", "0002_as_makemigrations_writes_it", "0003_drop_name_index"}

    back = migrate("safeddl_fixture", "0001", "--no-backup", "--allow-unsafe", "--json")
    assert back.returncode == 0, back.stderr
    assert report(back)["status"] == "ok"
    backwards = {f["migration"] for f in report(back)["findings"] if f["code"] == "BACKWARDS" and f["blocking"]}
    assert backwards == {"safeddl_fixture.0002_as_makemigrations_writes_it", "safeddl_fixture.0003_drop_name_index"}
    assert any("CONCURRENTLY" in s for s in online(back)["index"])  # 0003 reversed: the index built again
    assert applied() == {"0001_create_item"}

    inserted, updated, errors, longest = writer.stop()
    assert not errors, errors[:3]
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, code FROM {ITEM} WHERE code LIKE 'w-%'")
        present = dict(cursor.fetchall())
    assert present == inserted  # every committed insert, none extra
    after = sizes()
    assert after == {pk: size + updated.get(pk, 0) for pk, size in before.items()}  # every committed update
    assert longest > 0
    record_property("writer_commits", len(inserted))
    record_property("writer_longest_wait_seconds", round(longest, 3))
    print(f"writer: {len(inserted)} commits, longest single wait {longest:.3f} s")


def test_the_end_state_equals_plain_djangos(migrate):
    """The safe forms are a way of getting there, not a different schema: the catalog is the one Django's SQL makes."""
    seeded(migrate)
    at_0001 = catalog()
    forward = migrate("safeddl_fixture", "0002", "--no-backup", "--json")
    assert forward.returncode == 0 and report(forward)["online"], forward.stderr
    safe = catalog()
    back = migrate("safeddl_fixture", "0001", "--no-backup", "--allow-unsafe")
    assert back.returncode == 0, back.stderr
    assert catalog() == at_0001
    # NOT_NULL is judged unsafe on a table of any size (a NULL fails it): Django's way needs --allow-unsafe.
    plain = migrate("safeddl_fixture", "0002", "--no-backup", "--allow-unsafe", "--json", **HUGE)
    assert plain.returncode == 0, plain.stderr
    assert report(plain)["online"] == []  # Django's own statements ran
    assert catalog() == safe

    assert safe["columns"]["code"][0] is True  # NOT NULL, and no temporary CHECK left
    assert not [name for name in safe["constraints"] if name.endswith("_songsgen_notnull")]
    assert all(valid for valid, _unique, _def in safe["indexes"].values())
    assert all(validated for _type, validated, _def in safe["constraints"].values())
    assert safe["constraints"]["safeddl_item_code_unique"][:2] == ["u", True]
    assert {"safeddl_item_name", "safeddl_item_code_unique"} <= set(safe["indexes"])
    assert {c[0] for c in safe["constraints"].values()} == {"p", "c", "u", "f"}


def test_a_duplicate_refuses_the_unique_constraint_naming_the_values(migrate):
    """An operator needs the duplicated values to fix the data, and no INVALID unique index slowing every write."""
    seeded(migrate, dup_a=f"UPDATE {ITEM} SET code = 'dup-a' WHERE id IN (10, 20)",
           dup_b=f"UPDATE {ITEM} SET code = 'dup-b' WHERE id IN (30, 40, 50)")
    before = catalog()
    failed = migrate("safeddl_fixture", "0002", "--no-backup", "--json")
    assert failed.returncode == 1, failed.stderr
    result = report(failed)
    assert result["status"] == "restored"
    assert "'dup-a'" in result["error"] and "'dup-b'" in result["error"]
    assert "safeddl_item_code_unique" in result["error"] and "Nothing was built" in result["error"]
    assert "back as it was" in failed.stderr
    assert not invalid_indexes()
    assert catalog() == before  # no unique index or constraint, and the index and CHECK before it undone
    assert applied() == {"0001_create_item"}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {ITEM} WHERE code IN ('dup-a', 'dup-b')")
        assert cursor.fetchone()[0] == 5  # nothing deleted


@pytest.mark.parametrize(("bad_row", "constraint"), [
    (f"UPDATE {ITEM} SET size = -1 WHERE id = 1234", "safeddl_item_size_positive"),  # the CHECK
    (f"UPDATE {ITEM} SET owner_id = 999999 WHERE id = 1234", "safeddl_fixture_item_owner_id_"),  # the FK
    (f"UPDATE {ITEM} SET code = NULL WHERE id = 1234", "safeddl_fixture_item_code_songsgen_notnull"),  # NOT NULL
], ids=["check", "foreign-key", "not-null"])
def test_a_violating_row_fails_validate_and_the_not_valid_constraint_is_removed(migrate, bad_row, constraint):
    """A NOT VALID constraint left behind would go on checking new rows that the migration never promised."""
    seeded(migrate, bad=bad_row)
    before = catalog()
    failed = migrate("safeddl_fixture", "0002", "--no-backup", "--json")
    assert failed.returncode == 1, failed.stderr
    result = report(failed)
    assert result["status"] == "restored"
    assert constraint in result["error"] and "violate" in result["error"], result["error"]
    assert "back as it was" in failed.stderr
    assert catalog() == before  # the NOT VALID constraint is gone, and what came before it undone
    assert not invalid_indexes()
    assert applied() == {"0001_create_item"}


def test_sigkill_during_create_index_concurrently_then_migrate_removes_the_invalid_index(migrate, sd_env):
    """A killed build leaves an INVALID index every write still pays for; the next migrate must clear it and finish."""
    import psycopg

    seeded(migrate)
    env = dict(sd_env, **BIG, SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS="60000",
               # the server notices its client is gone even while the build waits (else it would finish it)
               PGOPTIONS="-c client_connection_check_interval=100")
    with psycopg.connect(url()) as holder, psycopg.connect(url(), autocommit=True) as watch:
        holder.execute(f"UPDATE {ITEM} SET size = size WHERE id = 1")  # a writer's open transaction: CIC waits
        proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "migrate", "safeddl_fixture", "0002",
                                 "--no-backup"], env=env, cwd=REPO, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, building = time.monotonic() + 60, None
        while building is None:
            assert proc.poll() is None and time.monotonic() < deadline, "migrate never started the index build"
            building = watch.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE "
                                     "'CREATE INDEX CONCURRENTLY \"safeddl_item_name\"%%' "
                                     "AND wait_event_type = 'Lock'").fetchone()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        while watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", building).fetchone():
            assert time.monotonic() < deadline, "the killed migrate's build never ended"
            time.sleep(0.05)
        holder.rollback()
        assert invalid_indexes() == ["safeddl_item_name"]  # what the kill left

    again = migrate("safeddl_fixture", "0002", "--no-backup")
    assert again.returncode == 0, again.stderr
    assert "Removed the INVALID index safeddl_item_name" in again.stderr
    assert applied() == {"0001_create_item", "0002_as_makemigrations_writes_it"}
    assert not invalid_indexes()
    assert {"safeddl_item_name", "safeddl_item_code_unique"} <= set(catalog()["indexes"])


def test_the_safety_check_notes_the_safe_forms_and_squawk_finds_nothing(migrate, sd_env):
    """What will run safely must not be refused, and the second judge reads the SQL that will really run."""
    seeded(migrate)
    checked = migrate("safeddl_fixture", "--check-safety", "--json")
    assert checked.returncode == 0, checked.stderr
    assert "UNSAFE" not in checked.stderr
    findings = report(checked)["findings"]
    safely = {f["code"] for f in findings if "applied safely" in f["detail"]}
    assert {"INDEX_NOT_CONCURRENT", "CONSTRAINT_NOT_VALID", "ADD_UNIQUE", "NOT_NULL"} <= safely
    assert not [f for f in findings if f["blocking"]]

    squawk = Path(sys.executable).parent / "squawk"
    if not squawk.is_file():
        return  # squawk-cli not installed: our own rules alone judged it
    assert not [f for f in findings if f["source"] == "squawk" or f["agreed"]], findings
    # The judge is not blind: Django's own SQL for the same migration is what squawk flags.
    django_sql = subprocess.run([sys.executable, str(REPO / "manage.py"), "sqlmigrate", "safeddl_fixture", "0002"],
                                env=dict(sd_env, **BIG), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert django_sql.returncode == 0, django_sql.stderr
    judged = subprocess.run([str(squawk), "--reporter", "json", "--config", str(REPO / ".squawk.toml")],
                            input=django_sql.stdout, capture_output=True, text=True, timeout=60)
    rules = {v["rule_name"] for v in json.loads(judged.stdout)}
    assert {"require-concurrent-index-creation", "constraint-missing-not-valid"} <= rules, rules


def test_a_build_that_times_out_behind_a_long_transaction_leaves_no_invalid_index(migrate):
    """A run reported as restored must not leave, unnamed, an index it built half-way."""
    import psycopg

    seeded(migrate)
    before = catalog()
    with psycopg.connect(url()) as holder:
        holder.execute(f"UPDATE {ITEM} SET size = size WHERE id = 1")  # idle in transaction throughout
        failed = migrate("safeddl_fixture", "0002", "--no-backup", "--json", "--lock-retries", "0",
                         SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS="200")
        holder.rollback()
    assert failed.returncode == 1, failed.stderr
    assert report(failed)["status"] == "restored"
    assert applied() == {"0001_create_item"}
    # Removed, or at least named: PostgreSQL cannot drop it while that transaction lives.
    left = invalid_indexes()  # ['safeddl_item_name']
    assert not left or (all(name in failed.stderr for name in left) and "nothing had changed" not in failed.stderr)
    again = migrate("safeddl_fixture", "0001", "--no-backup")  # the transaction is gone: removed now
    assert again.returncode == 0 and not invalid_indexes(), again.stderr
    assert catalog() == before


def test_sigkill_between_not_valid_and_validate_then_migrate_validates_the_constraint(migrate, sd_env):
    """A kill after ADD … NOT VALID left a CHECK that never checks the old rows; the resumed migration sees the
    constraint and skips its operation, so the next migrate must validate it first."""
    import threading

    import psycopg

    seeded(migrate)
    env = dict(sd_env, **BIG, SONGSGEN_MIGRATE_LOCK_TIMEOUT_MS="60000",
               PGOPTIONS="-c client_connection_check_interval=100")
    validate = "ALTER TABLE %VALIDATE CONSTRAINT \"safeddl_item_size_positive\"%"
    with (psycopg.connect(url()) as reader, psycopg.connect(url()) as holder,
          psycopg.connect(url(), autocommit=True) as watch):
        # A reader's open transaction (ACCESS SHARE): the index build goes by, the ADD CHECK waits behind it.
        reader.execute(f"SELECT 1 FROM {ITEM} LIMIT 1")
        proc = subprocess.Popen([sys.executable, str(REPO / "manage.py"), "migrate", "safeddl_fixture", "0002",
                                 "--no-backup"], env=env, cwd=REPO, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60

        def waiting(pattern: str) -> tuple[int] | None:
            assert proc.poll() is None and time.monotonic() < deadline, f"migrate never waited on {pattern}"
            return watch.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND wait_event_type = 'Lock'",
                                 [pattern]).fetchone()

        while not waiting("ALTER TABLE %ADD CONSTRAINT \"safeddl_item_size_positive\"%NOT VALID%"):
            time.sleep(0.02)
        # Queued behind the ADD: granted once it commits, it then holds the VALIDATE off (SHARE UPDATE EXCLUSIVE).
        queued = threading.Thread(target=holder.execute, args=(f"LOCK TABLE {ITEM} IN SHARE UPDATE EXCLUSIVE MODE",))
        queued.start()
        while not watch.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'LOCK TABLE%%' "
                                "AND wait_event_type = 'Lock'").fetchone():
            time.sleep(0.02)
        reader.rollback()
        while (building := waiting(validate)) is None:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        queued.join(timeout=30)
        while watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", building).fetchone():
            assert time.monotonic() < deadline + 30, "the killed migrate's VALIDATE never ended"
            time.sleep(0.05)
        holder.rollback()  # only now: the waiting VALIDATE would otherwise get the lock and finish
    assert catalog()["constraints"]["safeddl_item_size_positive"][1] is False  # what the kill left: NOT VALID

    again = migrate("safeddl_fixture", "0002", "--no-backup")
    assert again.returncode == 0, again.stderr
    assert "Validated the NOT VALID constraint safeddl_fixture_item.safeddl_item_size_positive" in again.stderr
    assert applied() == {"0001_create_item", "0002_as_makemigrations_writes_it"}
    assert all(validated for _kind, validated, _sql in catalog()["constraints"].values())


def test_validating_a_left_not_valid_constraint_never_waits_behind_a_long_transaction(migrate):
    """A migrate or dbcheck must not hang on a leftover: behind another session's lock it keeps the constraint,
    names it, and validates it once the lock is gone."""
    import psycopg

    from songsgen.db.migrate.online import leftovers

    seeded(migrate)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {ITEM} ADD CONSTRAINT safeddl_left_check CHECK (size >= 0) NOT VALID")
    with psycopg.connect(url()) as holder:
        holder.execute(f"LOCK TABLE {ITEM} IN SHARE UPDATE EXCLUSIVE MODE")  # VALIDATE needs this one
        assert leftovers.remove(connection) == []
        kept = leftovers.find(connection)
        assert [item.table for item in kept] == [f"{ITEM}.safeddl_left_check"]
        assert "lock" in kept[0].kept()
        holder.rollback()
    assert [item.kind for item in leftovers.remove(connection)] == ["notvalid"]
    assert catalog()["constraints"]["safeddl_left_check"][1] is True
