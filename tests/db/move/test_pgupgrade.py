"""`manage.py pgupgrade` on real PostgreSQL servers, as real processes, with a real PgBouncer and writer.

The tests start their own servers (Debian's 15 as the source with wal_level=logical; PostgreSQL 18 from
the wheel `make pgmajors` unpacks as the target, and 14/16 for the refusals; tests/pgserver.py) and pass
explicit URLs to every subprocess. They run once, in the PostgreSQL leg of `make test`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection

from tests import sigint
from tests.db.move.test_transfer import db_url, manage, ok, refused, sql
from tests.pgbouncer import find_pgbouncer, pgbouncer_for
from tests.pgserver import find_bindir, postgres_server

REPO = Path(__file__).resolve().parents[3]
NAME = "songsgen_pgupgrade"
RECORDS = f"{NAME}_runs"  # each run recorded on the source

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql",
                                reason="starts its own servers: once, in the PostgreSQL leg, is enough")

WRITER_USER = 'from accounts.models import User; User.objects.create_user(username="live-writer", password="pw")'


def _server(major: int, *, logical: bool = False) -> Iterator[str]:
    bindir = find_bindir(major)
    if bindir is None:
        message = f"PostgreSQL {major} binaries not found (Debian postgresql-15; `make pgmajors` for 14/16/18)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " and CI=true: the upgrade tests must run.")
        pytest.skip(message)
    with postgres_server(bindir, logical=logical) as url:
        yield url


@pytest.fixture(scope="module")
def pg15() -> Iterator[str]:
    """The old server: PostgreSQL 15, wal_level=logical; the suite's own server when it is one (`make
    test-postgres` starts it with --logical), else a server of this module's."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        server = db_url(url, "postgres")
        with psycopg.connect(server, autocommit=True) as conn:
            major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
            wal = conn.execute("SHOW wal_level").fetchone()[0]
        if major == 15 and wal == "logical":
            yield server
            return
    yield from _server(15, logical=True)


@pytest.fixture
def new_db():
    """A new empty database on a server; its URL."""

    def make(server: str) -> str:
        name = f"u_{uuid.uuid4().hex[:10]}"
        sql(server, f"CREATE DATABASE {name}")
        return db_url(server, name)

    return make


@pytest.fixture
def seeded(pg15: str, new_db, tmp_path: Path) -> str:
    """A migrated source database on PostgreSQL 15 with demo data (seed_demo: 10 users, 300 songs)."""
    url = new_db(pg15)
    ok(manage("migrate", "-v0", url=url, data_dir=tmp_path))
    ok(manage("seed_demo", "--users", "10", "--songs", "300", "--seed", "3", url=url, data_dir=tmp_path))
    ok(manage("shell", "-c", WRITER_USER, url=url, data_dir=tmp_path))
    return url


def pgupgrade(*args: str, source: str, target: str, data_dir: Path, timeout: float = 300):
    return manage("pgupgrade", "--from", source, "--to", target, "--interval", "0.2", *args, url=source,
                  data_dir=data_dir, timeout=timeout)


def objects(source: str, target: str) -> dict[str, list]:
    """What pgupgrade creates, on both sides: must be nothing after a refusal or a finished run."""
    return {
        "publication": sql(source, "SELECT pubname FROM pg_publication"),
        "slot": sql(source, "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"),
        "source marker": sql(source, "SELECT tablename FROM pg_tables WHERE tablename IN (%s, %s)",
                             (NAME, RECORDS)),
        "subscription": sql(target, "SELECT subname FROM pg_subscription WHERE subdbid = "
                                    "(SELECT oid FROM pg_database WHERE datname = current_database())"),
        "target tables": sql(target, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"),
    }


def subscribed(url: str) -> bool:
    return bool(objects(url, url)["subscription"])


def source_read_only(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"


# --- refusals: one line each, nothing created ------------------------------------------------------------


def test_refuses_target_with_data(seeded, pg15, new_db, tmp_path):
    target = new_db(pg15)
    sql(target, "CREATE TABLE songs_song (id bigint PRIMARY KEY)")
    sql(target, "INSERT INTO songs_song VALUES (1)")
    err = refused(pgupgrade(source=seeded, target=target, data_dir=tmp_path), "already holds data", "songs_song")
    assert len(err.strip().splitlines()) == 1
    assert objects(seeded, target) == {"publication": [], "slot": [], "source marker": [], "subscription": [],
                                       "target tables": [("songs_song",)]}


def test_refuses_other_migration_history(seeded, pg15, new_db, tmp_path):
    sql(seeded, "INSERT INTO django_migrations (app, name, applied) VALUES ('songs', '9999_from_the_future', now())")
    target = new_db(pg15)
    err = refused(pgupgrade(source=seeded, target=target, data_dir=tmp_path), "another migration history",
                  "9999_from_the_future")
    assert len(err.strip().splitlines()) == 1
    assert objects(seeded, target) == {"publication": [], "slot": [], "source marker": [], "subscription": [],
                                       "target tables": []}


def test_refuses_source_without_logical_wal(new_db, tmp_path):
    for server in _server(15):  # a second server: wal_level=replica, the default
        source = new_db(server)
        ok(manage("migrate", "-v0", url=source, data_dir=tmp_path))
        target = new_db(server)
        err = refused(pgupgrade(source=source, target=target, data_dir=tmp_path),
                      "wal_level is replica, not logical", "ALTER SYSTEM SET wal_level = logical", "restart")
        assert len(err.strip().splitlines()) == 1
        assert objects(source, target)["target tables"] == [] and not source_read_only(source)


def test_refuses_unreachable_target(seeded, tmp_path):
    err = refused(pgupgrade(source=seeded, target="postgres://u:secret@127.0.0.1:1/nowhere", data_dir=tmp_path),
                  "Cannot connect to the target database", "u:***@")
    assert "secret" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("major, fragment", [(14, "older than the source's 15"),
                                             (16, "lacks the extension(s) pg_trgm")])
def test_refuses_older_major_and_missing_extension(seeded, new_db, tmp_path, major, fragment):
    for server in _server(major):
        target = new_db(server)
        err = refused(pgupgrade(source=seeded, target=target, data_dir=tmp_path), fragment)
        assert len(err.strip().splitlines()) == 1
        assert objects(seeded, target)["target tables"] == [] and objects(seeded, target)["publication"] == []


# --- the upgrade --------------------------------------------------------------------------------------------


class Writer:
    """tests/db/live_writer.py, the application's stand-in, committing songs through PgBouncer."""

    def __init__(self, url: str, folder: Path) -> None:
        self.out, self.stop = folder / "writes.tsv", folder / "stop"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SONGSGEN_", "DATABASE_URL"))}
        env.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="tests.settings", SONGSGEN_DATA_DIR=str(folder),
                   PYTHONPATH=str(REPO), SECRET_KEY="test-only-secret-key-never-used-outside-the-test-suite")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.db.live_writer", str(self.out), str(self.stop)],
                                     env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)

    def commits(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def finish(self) -> tuple[list[int], list[str]]:
        """Stop it; (ids it committed, errors it saw)."""
        self.stop.touch()
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        lines = self.commits()
        return [int(line.split("\t")[0]) for line in lines if not line.startswith("ERROR")], [
            line for line in lines if line.startswith("ERROR")]


def _wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def upgrade_with_writer(source_server: str, source: str, target: str, tmp_path: Path) -> None:
    """The whole upgrade through PgBouncer with the writer running; asserts what a user would check."""
    dbname = source.rsplit("/", 1)[1]
    if find_pgbouncer() is None:
        pytest.fail("pgbouncer is not installed (Debian pgbouncer; .ci/run installs it)")
    with pgbouncer_for(source_server, dbname) as bouncer:
        writer = Writer(bouncer.url, tmp_path)
        try:
            _wait_for(lambda: len(writer.commits()) >= 5)
            result = pgupgrade("--cutover", "--json", "--pgbouncer", bouncer.admin_url, "--pgbouncer-config",
                               str(bouncer.config), source=source, target=target, data_dir=tmp_path)
            ok(result)
            before = len(writer.commits())
            _wait_for(lambda: len(writer.commits()) >= before + 10)  # the writer goes on, now on the target
        finally:
            ids, errors = writer.finish()
    report = json.loads(result.stdout)
    assert errors == [] and report["proof"] == "equal"
    assert "copy songs_song:" in result.stderr and "rows/s" in result.stderr and "lag" in result.stderr
    on_target = {r[0] for r in sql(target, "SELECT id FROM songs_song")}
    on_source = {r[0] for r in sql(source, "SELECT id FROM songs_song")}
    assert set(ids) <= on_target  # every song the writer was told was committed is on the target
    after = [i for i in ids if i not in on_source]
    assert after and min(after) > max(on_source)  # the target's sequence went past the source's
    assert report["rows"]["songs_song"] == len(on_source) and report["writes_paused_ms"] > 0
    left = objects(source, target)
    assert (left["publication"], left["slot"], left["source marker"], left["subscription"]) == ([], [], [], [])
    assert (NAME,) not in left["target tables"] and not source_read_only(source)


def test_upgrade_same_major_through_pgbouncer(pg15, seeded, new_db, tmp_path):
    """15 -> 15 on one server (what runs when only Debian's PostgreSQL is at hand)."""
    upgrade_with_writer(pg15, seeded, new_db(pg15), tmp_path)


def same_password(server: str, like: str) -> str:
    """The new server's postgres role given the old one's password, as an operator sets it up; its URL."""
    old, new = urlsplit(like), urlsplit(server)
    sql(server, f"ALTER ROLE postgres PASSWORD '{old.password}'")
    return urlunsplit(new._replace(netloc=f"{old.username}:{old.password}@{new.hostname}:{new.port}"))


def test_upgrade_15_to_18_through_pgbouncer(pg15, seeded, new_db, tmp_path):
    for server in _server(18):
        upgrade_with_writer(pg15, seeded, new_db(same_password(server, pg15)), tmp_path)


def test_refuses_a_target_pgbouncer_cannot_log_in_to(pg15, seeded, new_db, tmp_path):
    """The application's password is not the new server's: the cutover would leave every client waiting."""
    dbname = seeded.rsplit("/", 1)[1]
    for server in _server(18):
        target = new_db(server)  # its own random password
        with pgbouncer_for(pg15, dbname) as bouncer:
            config = bouncer.config.read_text()
            err = refused(pgupgrade("--cutover", "--pgbouncer", bouncer.admin_url, "--pgbouncer-config",
                                    str(bouncer.config), source=seeded, target=target, data_dir=tmp_path),
                          "PgBouncer cannot log in to the target as postgres", "password authentication failed")
            assert len(err.strip().splitlines()) == 1 and bouncer.config.read_text() == config
            with psycopg.connect(bouncer.url, autocommit=True, connect_timeout=10) as conn:  # still the source
                assert conn.execute("SELECT count(*) FROM songs_song").fetchone()[0] > 0
        assert objects(seeded, target) == {"publication": [], "slot": [], "source marker": [], "subscription": [],
                                           "target tables": []}


def test_read_only_cutover_prints_the_new_url(pg15, seeded, new_db, tmp_path):
    target = new_db(pg15)
    result = ok(pgupgrade("--cutover", source=seeded, target=target, data_dir=tmp_path))
    assert "Deploy DATABASE_URL=" in result.stdout and "proof equal" in result.stdout
    assert source_read_only(seeded)  # retired: the application must move to the target
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        sql(seeded, "INSERT INTO auth_group (name) VALUES ('late')")
    assert sql(target, "SELECT count(*) FROM songs_song") == sql(seeded, "SELECT count(*) FROM songs_song")


def test_killed_run_is_cleaned_up_by_the_next(pg15, seeded, new_db, tmp_path):
    target = new_db(pg15)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "pgupgrade", "--from", seeded, "--to", target, "--interval", "0.2"],
        env=_env(seeded, tmp_path), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: subscribed(target),
                  timeout=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (publication,), = sql(seeded, "SELECT pubname FROM pg_publication")  # left behind by the killed run
    assert publication.startswith(NAME)
    result = ok(pgupgrade("--cutover", "--json", source=seeded, target=target, data_dir=tmp_path))
    assert "interrupted earlier run" in result.stderr and json.loads(result.stdout)["proof"] == "equal"


def test_ctrl_c_drops_everything_and_leaves_the_source_writable(pg15, seeded, new_db, tmp_path):
    target = new_db(pg15)
    proc = sigint.popen(
        [sys.executable, str(REPO / "manage.py"), "pgupgrade", "--from", seeded, "--to", target, "--interval", "0.2"],
        env=_env(seeded, tmp_path), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    _wait_for(lambda: subscribed(target),
              timeout=120)
    # The source's migrate lock is held: a schema change would break the replication.
    refused(manage("migrate", "--noinput", url=seeded, data_dir=tmp_path), "pgupgrade")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Interrupted" in err and "Traceback" not in err, err
    left = objects(seeded, target)
    assert (left["publication"], left["slot"], left["source marker"], left["subscription"]) == ([], [], [], [])
    assert sql(target, "SELECT count(*) FROM songs_song") == [(0,)] and not source_read_only(seeded)


def test_cutover_from_another_shell_resumes_the_source_when_a_check_in_the_pause_fails(
    pg15, seeded, new_db, tmp_path
):
    """A row written on the target behind the replication's back: the counts inside the pause differ, so the
    cutover is abandoned, PgBouncer resumed on the source, and the writer never saw an error."""
    target = new_db(pg15)
    with pgbouncer_for(pg15, seeded.rsplit("/", 1)[1]) as bouncer:
        writer = Writer(bouncer.url, tmp_path)
        running = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "pgupgrade", "--from", seeded, "--to", target, "--interval",
             "0.2", "--pgbouncer", bouncer.admin_url, "--pgbouncer-config", str(bouncer.config)],
            env=_env(seeded, tmp_path), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            _wait_for(lambda: subscribed(target) and sql(target, "SELECT count(*) FROM songs_song")[0][0] > 0,
                      timeout=120)
            refused(pgupgrade(source=seeded, target=target, data_dir=tmp_path), "Another pgupgrade is already")
            sql(target, "INSERT INTO auth_group (id, name) VALUES (99999, 'written on the target')")
            asked = ok(pgupgrade("--cutover", source=seeded, target=target, data_dir=tmp_path, timeout=120))
            assert "has finished" in asked.stdout
            _, err = running.communicate(timeout=60)
        finally:
            if running.poll() is None:
                running.kill()
                running.wait()
        before = len(writer.commits())
        _wait_for(lambda: len(writer.commits()) >= before + 5)  # PgBouncer resumed, still on the source
        ids, errors = writer.finish()
        config = bouncer.config.read_text()
    assert running.returncode != 0 and "Traceback" not in err, err
    assert "Cutover abandoned, the source resumed and stays the truth" in err and "auth_group" in err
    assert errors == [] and set(ids) <= {r[0] for r in sql(seeded, "SELECT id FROM songs_song")}
    assert f"dbname={seeded.rsplit('/', 1)[1]}" in config and not source_read_only(seeded)
    left = objects(seeded, target)
    assert (left["publication"], left["slot"], left["source marker"], left["subscription"]) == ([], [], [], [])


def test_a_transaction_that_keeps_pgbouncer_from_pausing_gives_up_the_cutover(pg15, seeded, new_db, tmp_path):
    """PAUSE waits for transactions in flight: one left open makes the cutover give up after --pause-timeout,
    resume PgBouncer and drop the replication; the application's next query goes through at once."""
    target = new_db(pg15)
    with pgbouncer_for(pg15, seeded.rsplit("/", 1)[1]) as bouncer:
        idle = psycopg.connect(bouncer.url)  # a transaction open through PgBouncer, as a stuck request would
        idle.execute("SELECT 1")
        try:
            started = time.monotonic()
            err = refused(pgupgrade("--cutover", "--pause-timeout", "1", "--pgbouncer", bouncer.admin_url,
                                    "--pgbouncer-config", str(bouncer.config), source=seeded, target=target,
                                    data_dir=tmp_path, timeout=120), "could not pause", "within 1 s")
            assert time.monotonic() - started < 100
        finally:
            idle.rollback()
            idle.close()
        with psycopg.connect(bouncer.url, autocommit=True, connect_timeout=5) as app:
            app.execute("SET statement_timeout = '5s'")
            assert app.execute("SELECT count(*) FROM songs_song").fetchone()[0] > 0  # not paused
    assert "Traceback" not in err
    left = objects(seeded, target)
    assert (left["publication"], left["slot"], left["source marker"], left["subscription"]) == ([], [], [], [])


def test_failed_proof_keeps_both_sides_and_finish_drops_only_the_replication(pg15, seeded, new_db, tmp_path):
    """A row changed on the target behind the replication's back: counts and highest ids agree, so the switch
    happens, but the checksums do not: the command says so naming table and key, keeps everything, and a
    later run refuses to start over on the live target until --finish drops the replication objects."""
    target = new_db(pg15)
    running = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "pgupgrade", "--from", seeded, "--to", target, "--interval", "0.2"],
        env=_env(seeded, tmp_path), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: subscribed(target) and sql(
            target, "SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')")[0][0]
            and sql(target, "SELECT count(*) FROM pg_subscription_rel")[0][0] > 0, timeout=120)
        (changed,), = sql(target, "SELECT min(id) FROM songs_song")
        sql(target, "UPDATE songs_song SET title = 'changed behind its back' WHERE id = %s", (changed,))
        ok(pgupgrade("--cutover", source=seeded, target=target, data_dir=tmp_path, timeout=120))
        _, err = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode != 0 and "Traceback" not in err, err
    assert "PROOF FAILED" in err and "songs_song" in err and str(changed) in err
    assert objects(seeded, target)["publication"][0][0].startswith(NAME) and subscribed(target)  # kept for repair
    refused(pgupgrade(source=seeded, target=target, data_dir=tmp_path), "already cut over to this target")
    assert sql(target, "SELECT title FROM songs_song WHERE id = %s", (changed,)) == [("changed behind its back",)]
    ok(pgupgrade("--finish", source=seeded, target=target, data_dir=tmp_path))
    left = objects(seeded, target)
    assert (left["publication"], left["slot"], left["source marker"], left["subscription"]) == ([], [], [], [])
    assert sql(target, "SELECT count(*) FROM songs_song") == sql(seeded, "SELECT count(*) FROM songs_song")


def _env(url: str, data_dir: Path) -> dict[str, str]:
    from tests.db.move.test_transfer import env_for

    return env_for(url, data_dir)
