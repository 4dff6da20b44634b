"""transferdb and dbcompare on real files and a real PostgreSQL server, as real processes.

The tests start their own throwaway PostgreSQL (they need two databases at once, whatever
DATABASE_URL the suite runs under) and pass explicit URLs to every subprocess. The source is a
SQLite file, migrated, seeded with `seed_demo` and with awkward values (tests/db/transfer_fixtures).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.pgserver import find_bindir, free_port, postgres_server

REPO = Path(__file__).resolve().parents[3]
PROGRESS_TABLE = "songsgen_transfer_progress"

# Awkward values, written through the ORM on the source (run by `manage.py shell -c`).
TRICKY_ROWS = r'''
import datetime as dt, decimal, uuid, zoneinfo
from django.apps import apps
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.management import create_contenttypes
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from tests.db.transfer_fixtures.models import Hashed, Sample

# Content types (and their permissions) recreated: their ids now differ from a freshly migrated
# database's, so a transfer that kept the target's own rows would point foreign keys astray.
config = apps.get_app_config("transfer_fixtures")
ContentType.objects.filter(app_label=config.label).delete()
create_contenttypes(config, verbosity=0)
create_permissions(config, verbosity=0)

user = get_user_model().objects.create_user(
    username="zoë_🎵", email="zoe@example.com", password="pw", first_name='Zoë \\N "quoted"\ttab\nnewline',
)
group = Group.objects.create(name="editors ✓")
group.permissions.set(Permission.objects.filter(content_type__app_label=config.label))
user.groups.add(group)
user.user_permissions.add(Permission.objects.get(codename="view_sample"))
LogEntry.objects.create(
    user=user, content_type=ContentType.objects.get_for_model(Sample), object_id="1", object_repr="sample ✓",
    action_flag=ADDITION, change_message='[{"added": {}}]',
)
for key in ("a" * 32, "b" * 32):
    Session.objects.create(session_key=key, session_data="data ✓", expire_date=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
kolkata = zoneinfo.ZoneInfo("Asia/Kolkata")
Sample.objects.create(
    flag=True, maybe=None, payload={"b": 1, "a": [1, 2.5, "ü", None], "nested": {"z": None, "y": True}},
    amount=decimal.Decimal("1234.5678"), ratio=0.1 + 0.2,
    happened_at=dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=kolkata), day=dt.date(1999, 12, 31),
    at=dt.time(13, 14, 15, 161718), span=dt.timedelta(days=3, microseconds=7),
    token=uuid.UUID("12345678-1234-5678-1234-567812345678"), blob=b"\x00\xff\x10bin",
    text="emoji 🎶, a backslash \\ and \\N, CRLF\r\n", owner=user,
)
Sample.objects.create(flag=False, maybe=False, payload=[], ratio=1e-300, amount=decimal.Decimal("-0.0001"),
                      happened_at=dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
Sample.objects.create(maybe=True, payload="just a JSON string", ratio=-1.5e300, span=dt.timedelta(0))
Sample.objects.create()  # every nullable column NULL
# Hashed by the databases themselves (songsgen.db.move.rowhash): the edges of each type's canonical text.
Hashed.objects.create(
    flag=True, payload={"b": 1, "a": [1, 2.5, "ü", None, 1e-7, 1e20], "nested": {"z": None, "yy": True},
                        "": 'tab\t "q" \\ \u0001'},
    ratio=0.1 + 0.2, happened_at=dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=kolkata), day=dt.date(1, 1, 1),
    at=dt.time(0, 0), span=dt.timedelta(days=-1, microseconds=5), blob=b"\x00\xff", label="zoë 🎵",
    count=-2**63, owner=user,
)
Hashed.objects.create(maybe=False, payload=[], ratio=-0.0, happened_at=dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
                      day=dt.date(9999, 12, 31), at=dt.time(23, 59, 59, 999999), span=dt.timedelta(0), blob=b"",
                      label="1", count=2**63 - 1)
Hashed.objects.create(payload="just a JSON string", ratio=float("-inf"))
Hashed.objects.create()  # every nullable column NULL
print("tricky rows written")
'''


# --- a server, databases and commands -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    """Superuser URL of a throwaway PostgreSQL server for this module."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) are missing and CI=true: the transfer tests must run.")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: install postgresql-15 to run the transfer tests.")
    with postgres_server(bindir) as url:
        yield url


def db_url(server: str, name: str) -> str:
    return server.rsplit("/", 1)[0] + "/" + name


def env_for(url: str, data_dir: Path) -> dict[str, str]:
    """Environment for a manage.py subprocess: tests.settings (with the fixtures app), explicit URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGSGEN_", "DATABASE_URL"))}
    env.update(
        DATABASE_URL=url, DJANGO_SETTINGS_MODULE="tests.settings", SONGSGEN_DATA_DIR=str(data_dir),
        PYTHONPATH=str(REPO), SECRET_KEY="test-only-secret-key-never-used-outside-the-test-suite",
    )
    return env


def manage(*args: str, url: str, data_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args], env=env_for(url, data_dir), cwd=REPO,
        capture_output=True, text=True, timeout=timeout,
    )
    return result


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A clean CommandError: non-zero exit, the fragments in the message, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"
    return result.stderr


def sql(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def template(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Name of a migrated, empty PostgreSQL database to clone targets from (migrate once, not per test)."""
    sql(pg_server, "CREATE DATABASE migrated_template")
    ok(manage("migrate", "-v0", url=db_url(pg_server, "migrated_template"), data_dir=tmp_path_factory.mktemp("d")))
    return "migrated_template"


@pytest.fixture
def new_pg(pg_server: str, template: str):
    """Make a fresh database on the server: migrated (cloned from the template) or empty."""

    def make(*, migrated: bool = True) -> str:
        name = f"t_{uuid.uuid4().hex[:10]}"
        sql(pg_server, f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if migrated else ""))
        return db_url(pg_server, name)

    return make


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file with seed_demo data (20 users, 500 songs) and the tricky rows."""
    folder = tmp_path_factory.mktemp("source")
    url = f"sqlite:///{folder / 'source.db'}"
    ok(manage("migrate", "-v0", url=url, data_dir=folder))
    ok(manage("seed_demo", "--users", "20", "--songs", "500", "--seed", "6", url=url, data_dir=folder))
    assert "tricky rows written" in ok(manage("shell", "-c", TRICKY_ROWS, url=url, data_dir=folder)).stdout
    return url


def new_sqlite(folder: Path, name: str, *, migrated: bool = True) -> str:
    url = f"sqlite:///{folder / name}"
    if migrated:
        ok(manage("migrate", "-v0", url=url, data_dir=folder))
    return url


def transferdb(*args: str, source: str, target: str, data_dir: Path, timeout: float = 300):
    return manage("transferdb", "--from", source, "--to", target, *args, url=source, data_dir=data_dir,
                  timeout=timeout)


def dbcompare(*args: str, source: str, target: str, data_dir: Path):
    return manage("dbcompare", "--from", source, "--to", target, *args, url=source, data_dir=data_dir)


# --- the round trip ----------------------------------------------------------------------------------


def test_round_trip_sqlite_postgresql_sqlite_is_equal(source, new_pg, tmp_path):
    pg = new_pg()
    out = ok(transferdb("--batch-size", "100", source=source, target=pg, data_dir=tmp_path))
    assert re.search(r"All \d+ tables equal\.", out.stdout) and "songs_song" in out.stdout
    assert "rows/s" in out.stderr and "ETA" in out.stderr  # progress per table, with an overall ETA

    # Migrate-created rows are the source's, with the source's ids: the recreated content types
    # keep their new ids, so the admin log entry and the permissions still name the right model.
    assert sql(pg, "SELECT ct.app_label, ct.model FROM django_admin_log l "
                   "JOIN django_content_type ct ON ct.id = l.content_type_id") == [("transfer_fixtures", "sample")]
    assert sql(pg, "SELECT min(ct.id) > 8 FROM django_content_type ct WHERE app_label = 'transfer_fixtures'") == [
        (True,)]
    # Sequences moved past the copied ids: the next song gets a fresh id.
    (max_id, next_id), = sql(pg, "SELECT max(id), nextval(pg_get_serial_sequence('songs_song', 'id')) "
                                "FROM songs_song")
    assert next_id > max_id
    assert not sql(pg, "SELECT 1 FROM pg_tables WHERE tablename = %s", (PROGRESS_TABLE,))

    back = new_sqlite(tmp_path, "back.db")
    ok(transferdb(source=pg, target=back, data_dir=tmp_path))
    result = ok(dbcompare("--json", source=source, target=back, data_dir=tmp_path))
    report = json.loads(result.stdout)
    assert report["equal"] is True
    by_table = {t["table"]: t for t in report["tables"]}
    assert by_table["songs_song"]["source_rows"] == 500 and by_table["transfer_fixtures_sample"]["target_rows"] == 4
    assert by_table["accounts_user_groups"]["source_rows"] == 1 and by_table["django_session"]["source_rows"] == 2
    assert by_table["transfer_fixtures_hashed"]["target_rows"] == 4


def test_dbcompare_names_a_changed_value_a_missing_row_and_an_extra_row(source, new_pg, tmp_path):
    pg = new_pg()
    ok(transferdb(source=source, target=pg, data_dir=tmp_path))
    ok(dbcompare(source=source, target=pg, data_dir=tmp_path))

    (song_id,), = sql(pg, "SELECT id FROM songs_song ORDER BY id LIMIT 1 OFFSET 123")
    sql(pg, "UPDATE songs_song SET title = title || '!' WHERE id = %s", (song_id,))
    (sample_id,), = sql(pg, "SELECT id FROM transfer_fixtures_sample WHERE happened_at IS NOT NULL "
                            "ORDER BY id LIMIT 1")
    sql(pg, "UPDATE transfer_fixtures_sample SET happened_at = happened_at + interval '1 microsecond' "
            "WHERE id = %s", (sample_id,))
    (job_id,), = sql(pg, "SELECT max(id) FROM queueing_generationqueue")
    sql(pg, "DELETE FROM queueing_generationqueue WHERE id = %s", (job_id,))
    sql(pg, "INSERT INTO django_session (session_key, session_data, expire_date) VALUES ('extra', '', now())")

    result = dbcompare(source=source, target=pg, data_dir=tmp_path)
    assert result.returncode == 1
    table = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert f"changed: pk {song_id}" in table["songs_song"] and "same row count" in table["songs_song"]
    assert f"changed: pk {sample_id}" in table["transfer_fixtures_sample"]
    assert f"missing in target: pk {job_id}" in table["queueing_generationqueue"]
    assert "extra in target: pk extra" in table["django_session"]
    assert table["accounts_user"].endswith("ok")
    assert re.search(r"4 of \d+ tables differ", result.stdout)
    refused(result, "Databases differ in: ", "songs_song (same row count")


# --- interrupted and resumed --------------------------------------------------------------------------


def _wait_for_lock_wait(admin_url: str, database: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"transferdb ended before it reached the blocked batch:\n{process.stderr.read()}")
        if sql(admin_url, "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
               (database,)):
            return
        time.sleep(0.05)
    pytest.fail("transferdb never waited on the blocked batch")


def test_a_killed_transfer_resumes_from_the_last_committed_batch(source, new_pg, pg_server, tmp_path):
    pg = new_pg()
    database = pg.rsplit("/", 1)[1]
    total = 500  # songs in the source
    # Another session inserts, without committing, the song the transfer will reach mid-table: the
    # batch holding that id waits on its unique key, so the process is killed in the middle of the
    # songs table, deterministically, with earlier batches committed.
    blocker = psycopg.connect(pg)
    blocker.execute(
        "INSERT INTO songs_song (id, user_id, title, genre, style_prompt, lyrics, status, audio_file_path, "
        "video_file_path, play_count, created_at) VALUES (260, 1, 't', 'pop', '', '', 'pending', '', '', 0, now())"
    )
    process = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "transferdb", "--from", source, "--to", pg, "--batch-size", "50"],
        env=env_for(source, tmp_path), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for_lock_wait(pg_server, database, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        blocker.rollback()
        blocker.close()

    (songs,), = sql(pg, "SELECT count(*) FROM songs_song")
    assert 0 < songs < total, songs  # killed mid-table: some batches committed, not all
    assert songs % 50 == 0  # whole batches only
    assert sql(pg, f"SELECT done FROM {PROGRESS_TABLE} WHERE table_name = 'songs_song'") == [(False,)]
    assert sql(pg, "SELECT count(*) FROM queueing_generationqueue") == [(0,)]

    # Without --resume the target is refused (it holds an interrupted transfer), untouched.
    refused(transferdb(source=source, target=pg, data_dir=tmp_path), "interrupted transfer", "--resume")
    assert sql(pg, "SELECT count(*) FROM songs_song") == [(songs,)]

    out = ok(transferdb("--resume", "--batch-size", "50", source=source, target=pg, data_dir=tmp_path))
    assert "Resumed and copied" in out.stdout
    assert f"songs_song: {total:,}/{total:,}" in out.stderr
    ok(dbcompare(source=source, target=pg, data_dir=tmp_path))
    assert not sql(pg, "SELECT 1 FROM pg_tables WHERE tablename = %s", (PROGRESS_TABLE,))


# --- refusals: each a clear error, nothing written ----------------------------------------------------


def _row_counts(url: str) -> list[tuple]:
    return sql(url, "SELECT (SELECT count(*) FROM songs_song), (SELECT count(*) FROM accounts_user), "
                    "(SELECT count(*) FROM django_content_type), (SELECT max(id) FROM django_content_type), "
                    "(SELECT count(*) FROM django_migrations)")


def test_unreachable_server_and_wrong_password_are_clear_errors(source, new_pg, pg_server, tmp_path):
    unreachable = f"postgres://postgres:s3cret@127.0.0.1:{free_port()}/nothing"
    message = refused(transferdb(source=source, target=unreachable, data_dir=tmp_path),
                      "Cannot connect to the target database", "postgres:***@127.0.0.1")
    assert "s3cret" not in message

    pg = new_pg()
    wrong = pg.replace(pg.split("//", 1)[1].split("@")[0], "postgres:wrong-password")
    refused(transferdb(source=source, target=wrong, data_dir=tmp_path),
            "Cannot connect to the target database", "password authentication failed")
    refused(dbcompare(source=wrong, target=source, data_dir=tmp_path), "Cannot connect to the source database")
    assert sql(pg, "SELECT count(*) FROM songs_song") == [(0,)]


def test_target_on_another_migration_state_is_refused_with_the_command_to_run(source, new_pg, tmp_path):
    pg = new_pg()
    ok(manage("migrate", "sessions", "zero", "--allow-unsafe", "-v0", url=pg, data_dir=tmp_path))
    before = _row_counts(pg)
    refused(transferdb(source=source, target=pg, data_dir=tmp_path),
            "another migration state", "sessions.0001_initial", "python manage.py migrate")
    assert _row_counts(pg) == before
    assert not sql(pg, "SELECT 1 FROM pg_tables WHERE tablename = %s", (PROGRESS_TABLE,))

    empty = new_pg(migrated=False)
    refused(transferdb(source=source, target=empty, data_dir=tmp_path), "python manage.py migrate")
    assert sql(empty, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_same_source_and_target_is_refused(source, new_pg, tmp_path):
    path = source.removeprefix("sqlite:///")
    refused(transferdb(source=source, target=f"sqlite:///{Path(path).parent}/./{Path(path).name}",
                       data_dir=tmp_path), "same database")
    pg = new_pg()
    # One server, two spellings of its address.
    refused(transferdb(source=pg, target=pg.replace("127.0.0.1", "localhost"), data_dir=tmp_path), "same database")
    refused(dbcompare(source=source, target=source, data_dir=tmp_path), "same database")


def test_missing_sqlite_file_is_refused_and_not_created(source, tmp_path):
    target = tmp_path / "nowhere.db"
    refused(transferdb(source=source, target=f"sqlite:///{target}", data_dir=tmp_path), "does not exist",
            "manage.py migrate")
    assert not target.exists()


def test_target_holding_data_needs_truncate_and_dry_run_writes_nothing(source, new_pg, tmp_path):
    pg = new_pg()
    dry = ok(transferdb("--dry-run", source=source, target=pg, data_dir=tmp_path))
    assert "nothing was written" in dry.stdout and "songs_song: 500 rows" in dry.stdout
    assert sql(pg, "SELECT count(*) FROM songs_song") == [(0,)]

    ok(transferdb(source=source, target=pg, data_dir=tmp_path))
    refused(transferdb(source=source, target=pg, data_dir=tmp_path), "already holds data", "--truncate")
    sql(pg, "UPDATE songs_song SET play_count = play_count + 1")
    assert dbcompare(source=source, target=pg, data_dir=tmp_path).returncode == 1
    ok(transferdb("--truncate", source=source, target=pg, data_dir=tmp_path))
    ok(dbcompare(source=source, target=pg, data_dir=tmp_path))


def test_resume_without_an_interrupted_transfer_is_refused(source, new_pg, tmp_path):
    pg = new_pg()
    refused(transferdb("--resume", source=source, target=pg, data_dir=tmp_path), "Nothing to resume")
    assert sql(pg, "SELECT count(*) FROM songs_song") == [(0,)]
