"""An operator's mistake ends in one line on stderr, a non-zero exit and nothing written (issue 12).

Every case runs `manage.py` (or django-admin, or the WSGI module) as a real process with the
environment an operator would get wrong, and checks the exit code, the message, that no traceback
is printed, and that the data folder is byte-for-byte as it was (or was never created).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.pgserver import free_port

pg_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="needs the PostgreSQL server")
SECRET = "s3cret-password"


def operator_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator's shell: the project's own settings, a data folder, no test settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SONGSGEN_", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"))}
    env.update(SONGSGEN_DATA_DIR=str(data_dir), SECRET_KEY="test-only-secret-key-never-used-outside-the-test-suite",
               PYTHONPATH=str(REPO), **extra)
    return env


def _drop_root_file_override() -> None:
    """In the child, before exec: root gives up ignoring file permissions (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH leave the bounding set), so a chmod binds it as it binds any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run(args: list[str], env: dict[str, str], *, as_user: bool = False) -> subprocess.CompletedProcess:
    """`manage.py ARGS` (or, when args[0] is an executable path, that program) as a real process."""
    command = args if args[0].startswith("/") else [sys.executable, str(REPO / "manage.py"), *args]
    privileged = as_user and os.geteuid() == 0
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
                          preexec_fn=_drop_root_file_override if privileged else None)


@pytest.fixture(scope="session")
def permissions_bind(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip when file permissions cannot be made to bind the test processes (root that cannot drop them)."""
    probe = tmp_path_factory.mktemp("probe")
    probe.chmod(0o555)
    try:
        result = run([sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"], dict(os.environ), as_user=True)
    finally:
        probe.chmod(0o755)
    if result.returncode == 0:
        pytest.skip("cannot make file permissions bind this user (root without CAP_SETPCAP)")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` and its content's hash: equal snapshots mean nothing was written."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The single stderr line of a clean failure with exit `code`, holding every needle."""
    output = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout, output
    assert result.returncode == code, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, output
    for needle in needles:
        assert needle in lines[0], output
    return lines[0]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A songs.db migrated by this code, made once; tests copy it."""
    folder = tmp_path_factory.mktemp("migrated")
    result = run(["migrate", "--plain", "--noinput", "-v0"], operator_env(folder))
    assert result.returncode == 0, result.stderr
    return folder / "songs.db"


# --- runworker on a database that was never migrated ----------------------------------------------


@pytest.mark.parametrize("existing", [None, b""], ids=["no-file", "empty-file"])
def test_runworker_on_a_never_migrated_sqlite_database_says_run_migrate_and_creates_nothing(data_dir, existing):
    if existing is not None:
        (data_dir / "songs.db").write_bytes(existing)
    before = snapshot(data_dir)
    result = run(["runworker", "--burst"], operator_env(data_dir))
    one_line(result, 2, "songs.db", "Run `manage.py migrate` first.")
    assert snapshot(data_dir) == before


def test_runworker_on_a_database_without_the_queue_tables_says_run_migrate(data_dir):
    assert run(["migrate", "contenttypes", "--plain", "-v0"], operator_env(data_dir)).returncode == 0
    before = snapshot(data_dir)
    result = run(["runworker", "--burst"], operator_env(data_dir))
    one_line(result, 2, "lacks the table(s) queueing_generationqueue, songs_song", "Run `manage.py migrate` first.")
    assert snapshot(data_dir) == before


def test_runworker_on_a_database_behind_the_code_starts_and_names_the_pending_migrations(data_dir, migrated_db):
    """Not a refusal: during a deploy a release runs on the schema before its own migrations."""
    from django.db.migrations.loader import MigrationLoader

    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    [last] = [node for node in graph.leaf_nodes() if node[0] == "songs"]
    [previous] = [parent for parent in graph.node_map[last].parents if parent[0] == "songs"]
    shutil.copyfile(migrated_db, data_dir / "songs.db")
    assert run(["migrate", "songs", previous[1], "--plain", "-v0"], operator_env(data_dir)).returncode == 0
    result = run(["runworker", "--burst"], operator_env(data_dir))
    assert result.returncode == 0, result.stderr
    assert f"Note: 1 migration(s) of this code are not applied yet (songs.{last[1]})" in result.stderr


@pg_only
def test_runworker_on_a_never_migrated_postgresql_database_says_run_migrate(empty_pg_database, data_dir):
    import psycopg

    result = run(["runworker", "--burst"], operator_env(data_dir, DATABASE_URL=empty_pg_database))
    one_line(result, 2, "has not been migrated", "Run `manage.py migrate` first.")
    with psycopg.connect(empty_pg_database) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    assert tables == 0
    assert snapshot(data_dir) == {}


# --- PostgreSQL that cannot be reached -------------------------------------------------------------


@pytest.mark.parametrize("host", ["nonexistent.invalid", "127.0.0.1:{port}"], ids=["unresolvable", "closed-port"])
@pytest.mark.parametrize("command", [["migrate"], ["runworker", "--burst"], ["showmigrations"], ["dbcheck"]],
                         ids=lambda c: c[0])
def test_an_unreachable_postgresql_server_is_one_line(data_dir, host, command):
    host = host.format(port=free_port())  # a port nothing listens on
    url = f"postgres://songs:{SECRET}@{host}/songs"
    result = run(command, operator_env(data_dir, DATABASE_URL=url, SONGSGEN_PG_CONNECT_TIMEOUT="5"))
    line = one_line(result, 2, "Cannot connect to the PostgreSQL database 'songs' on", host.split(":")[0],
                    "Check the host, port, user, password and database name in DATABASE_URL")
    assert SECRET not in line
    assert snapshot(data_dir) == {}


# --- the data folder and the database file ---------------------------------------------------------


@pytest.mark.parametrize("missing", [False, True], ids=["read-only-folder", "cannot-be-created"])
def test_an_unwritable_data_dir_is_one_line_naming_the_variable(tmp_path, permissions_bind, missing):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    data_dir = locked / "data" if missing else locked
    try:
        result = run(["migrate"], operator_env(data_dir), as_user=True)
    finally:
        locked.chmod(0o755)
    reason = "cannot be created (Permission denied)" if missing else "is not writable by this user"
    one_line(result, 2, f"SONGSGEN_DATA_DIR {data_dir} {reason}", "Point SONGSGEN_DATA_DIR at a folder")
    assert snapshot(locked) == {}


def test_a_read_only_database_stops_the_worker_before_it_writes(data_dir, migrated_db, permissions_bind):
    database = data_dir / "songs.db"
    shutil.copyfile(migrated_db, database)
    database.chmod(0o444)
    before = snapshot(data_dir)
    result = run(["runworker", "--burst"], operator_env(data_dir), as_user=True)
    one_line(result, 2, "songs.db is read-only for this user", "write access")
    assert snapshot(data_dir) == before  # not even the -wal and -shm files


@pytest.mark.parametrize("content", [os.urandom(8192), b"songs,genre\nhello,pop\n"], ids=["random-bytes", "text"])
@pytest.mark.parametrize("command", [["migrate"], ["runworker", "--burst"]], ids=lambda c: c[0])
def test_a_songs_db_that_is_not_a_database_is_one_line_and_left_alone(data_dir, content, command):
    (data_dir / "songs.db").write_bytes(content)
    before = snapshot(data_dir)
    result = run(command, operator_env(data_dir))
    one_line(result, 2, "songs.db is not a", "SQLite database", "(file is not a database)")
    assert snapshot(data_dir) == before  # no lock file, no -wal, the bytes unchanged


# --- settings the environment gets wrong -------------------------------------------------------------


@pytest.mark.parametrize(("variables", "command", "needles"), [
    ({"DATABASE_URL": "garbage"}, ["migrate"], ["DATABASE_URL has no scheme", "postgres://USER:PASSWORD@HOST"]),
    ({"DATABASE_URL": f"mysql://songs:{SECRET}@db.example/songs"}, ["migrate"],
     ["DATABASE_URL names a mysql:// database; songsgen runs on SQLite or PostgreSQL"]),
    ({"SONGSGEN_SQLITE_BUSY_TIMEOUT": "ten"}, ["migrate"],
     ["SONGSGEN_SQLITE_BUSY_TIMEOUT must be a whole number, got 'ten'", "unset it for the default (10000)"]),
    ({"SONGSGEN_LEASE_SECONDS": "-30"}, ["runworker", "--burst"], ["SONGSGEN_LEASE_SECONDS must not be negative"]),
    ({"SONGSGEN_REPLICA_SYNC_INTERVAL": "0"}, ["replicate"],
     ["SONGSGEN_REPLICA_SYNC_INTERVAL must be between 0.01 and 3600 seconds, got 0"]),
], ids=["garbage-url", "mysql-url", "busy-timeout", "negative-lease", "replica-interval"])
def test_a_settings_error_is_one_line_and_creates_no_data_dir(tmp_path, variables, command, needles):
    data_dir = tmp_path / "data"
    result = run(command, operator_env(data_dir, **variables))
    line = one_line(result, 2, "Configuration error: ", *needles)
    assert SECRET not in line
    assert not data_dir.exists()


def test_django_admin_and_the_wsgi_module_print_a_settings_error_as_one_line(tmp_path):
    env = operator_env(tmp_path / "data", DATABASE_URL="garbage", DJANGO_SETTINGS_MODULE="songsgen.settings")
    django_admin = str(Path(sys.executable).with_name("django-admin"))
    one_line(run([django_admin, "migrate"], env), 1, "Configuration error: DATABASE_URL has no scheme")
    one_line(run([sys.executable, "-c", "import songsgen.wsgi"], env), 1,
             "Configuration error: DATABASE_URL has no scheme")
    assert not (tmp_path / "data").exists()


def test_tracebacks_stay_for_traceback_flag_and_for_errors_that_may_be_bugs(tmp_path, data_dir):
    """Not an operator case: the boundary hides nothing it does not recognise, and --traceback shows all."""
    asked = run(["migrate", "--traceback"], operator_env(tmp_path / "other", DATABASE_URL="garbage"))
    assert asked.returncode != 0 and "Traceback" in asked.stderr
    assert "ImproperlyConfigured: DATABASE_URL has no scheme" in asked.stderr
    bug = run(["shell", "-c", "1 / 0"], operator_env(data_dir))
    assert bug.returncode != 0 and "Traceback" in bug.stderr and "ZeroDivisionError" in bug.stderr
