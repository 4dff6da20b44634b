"""Continuous replication with real processes: `replicate` (Litestream), the application writing, SIGKILL,
and restores from the replica through the checked gate (songsgen/db/backup/replica.py, litestream.py, pitr.py)."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from songsgen.db.backup import remove_file, replica
from tests.db.replicas import (
    Replicate,
    Writer,
    checksum,
    environment,
    leftovers,
    make_database,
    manage,
    settings_dict,
    writer_ids,
)

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="Litestream replicates SQLite; PostgreSQL ships its own WAL"
)


def stamp(moment: float) -> str:
    """A --to-time argument for the wall-clock time `moment`."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def execute(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


@pytest.fixture
def live(tmp_path, transactional_db) -> Path:
    return make_database(connection.settings_dict["NAME"], tmp_path / "data")


@pytest.fixture
def env(live) -> dict[str, str]:
    return environment(live)


@pytest.fixture
def processes():
    """Started processes, killed at the end whatever the test did."""
    started: list = []
    yield started
    for item in started:
        if item.proc.poll() is None:
            item.proc.kill()
            item.proc.wait()


# --- losing the disk, and going back in time ---------------------------------------------------------


@sqlite_only
def test_a_lost_disk_costs_at_most_a_second_of_commits(live, env, processes):
    processes += [rep := Replicate(env, live), writer := Writer(env, live.parent)]
    writer.wait_for(150)
    for proc in (rep.proc, writer.proc):  # the machine dies: neither process gets to say anything
        proc.send_signal(signal.SIGKILL)
    rep.proc.wait()
    writer.proc.wait()
    told = writer.commits()
    remove_file(live)  # and the disk with it: the database and its WAL

    result = manage(env, "dbrestore", "--from-replica", "--noinput")

    assert result.returncode == 0, result.stderr
    present = writer_ids(live)
    kept = [c for c in told if c.id in present]
    lost = [c for c in told if c.id not in present]
    assert kept, "nothing of the writer's came back"
    assert all(c.id > kept[-1].id for c in lost), "a commit is missing from the middle"
    seconds = told[-1].committed - kept[-1].committed
    assert seconds <= 1.0, f"{len(lost)} commits lost, the last {seconds:.2f} s"


@sqlite_only
def test_to_time_restores_the_rows_committed_before_that_time(live, env, processes):
    processes += [rep := Replicate(env, live), writer := Writer(env, live.parent)]
    writer.wait_for(200)
    told = writer.stop()
    moment = told[len(told) * 2 // 3].committed + 0.05

    result = manage(env, "dbrestore", "--from-replica", "--to-time", stamp(moment), "--noinput")

    assert result.returncode == 0, result.stderr
    assert "Restored" in result.stdout and "integrity ok" in result.stdout
    present = writer_ids(live)
    assert not [c.id for c in told if c.started >= moment and c.id in present], "a commit from after the time"
    assert not [c.id for c in told if c.committed <= moment - 1 and c.id not in present]
    newest = max(c.committed for c in told if c.id in present)
    assert moment - newest <= 1.0, f"restored the state {moment - newest:.2f} s before the time asked for"
    assert rep.proc.poll() is None, "the restore stopped replication"


# --- the gate ---------------------------------------------------------------------------------------


@sqlite_only
def test_a_replica_of_another_database_is_refused_and_the_live_database_untouched(live, env, tmp_path, processes):
    other = tmp_path / "other" / "other.db"
    other.parent.mkdir()
    execute(other, "PRAGMA journal_mode = WAL", "CREATE TABLE notes (body TEXT)", "INSERT INTO notes VALUES ('hi')")
    processes.append(rep := Replicate(environment(other), other))
    execute(other, "INSERT INTO notes VALUES ('there')")
    rep.catch_up()
    assert rep.stop() == 0
    before = checksum(live)

    url = (other.parent / "replica" / "other.db").as_uri()
    result = manage(dict(env, SONGSGEN_REPLICA_URL=url), "dbrestore", "--from-replica", "--noinput")

    assert result.returncode == 1
    assert "not a Django database" in result.stderr and "The live database was not changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("CommandError: Restore refused: it has no django_")
    assert checksum(live) == before
    assert leftovers(live.parent) == [] and not list(live.parent.glob("*.pre-restore-*"))


@sqlite_only
def test_a_moment_whose_migration_history_is_ahead_of_the_code_is_refused(live, env, processes):
    processes.append(rep := Replicate(env, live))
    execute(live, "INSERT INTO django_migrations (app, name, applied) "
                  "VALUES ('songs', '9999_from_a_newer_release', '2026-01-01 00:00:00')")
    rep.catch_up()
    moment = time.time()
    time.sleep(0.3)
    execute(live, "DELETE FROM django_migrations WHERE name = '9999_from_a_newer_release'")
    rep.catch_up()
    before = checksum(live)

    result = manage(env, "dbrestore", "--from-replica", "--to-time", stamp(moment), "--noinput")

    assert result.returncode == 1
    assert "newer release" in result.stderr and "9999_from_a_newer_release" in result.stderr, result.stderr
    assert checksum(live) == before
    assert leftovers(live.parent) == []


# --- living beside the application --------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("command", [
    ("dbmaintain", "-v2"), ("dbbackup",), ("dbrestore", "--noinput"), ("migrate", "migrations_fixture", "0003"),
], ids=lambda c: c[0])
def test_our_checkpoints_do_not_stall_a_writer_while_replicating(live, env, processes, command):
    processes += [rep := Replicate(env, live), writer := Writer(env, live.parent)]
    if command[0] == "dbrestore":
        assert manage(env, "dbbackup").returncode == 0  # with the writer's user in it
    writer.wait_for(len(writer.commits()) + 20)
    # The baseline: a command that starts Django and reads the database but writes nothing. What the
    # writer waits during it is what this machine's load and a process start cost a commit.
    calm_start = time.time()
    assert manage(env, "dbmaintain", "--dry-run").returncode == 0
    calm_end = time.time()
    writer.wait_for(len(writer.commits()) + 20)
    started = time.time()

    fixture_app = {"DJANGO_SETTINGS_MODULE": "tests.settings_fixture"} if command[0] == "migrate" else {}
    result = manage(dict(env, **fixture_app), *command)

    ended = time.time()
    assert result.returncode == 0, result.stderr
    writer.wait_for(len(writer.commits()) + 20)
    told = writer.stop()
    assert writer.errors() == []
    during = [c for c in told if c.committed >= started and c.started <= ended + 1]
    assert during, "the writer committed nothing while the command ran"
    longest = max(c.waited for c in during)
    baseline = max((c.waited for c in told if c.committed >= calm_start and c.started <= calm_end), default=0.0)
    # A migration holds the write lock while it applies, and a restore while it copies, by design: writers may
    # wait that long (each says how long), and up to one more step of SQLite's busy handler (100 ms), but no
    # checkpoint may add to it.
    own = re.search(r"(?:Longest write lock held by migrate:|Writes waited at most) ([\d.]+) s", result.stdout)
    allowed = 0.1 + baseline + (float(own.group(1)) if own else 0.0)
    assert longest < allowed, f"a commit waited {longest * 1000:.0f} ms during {' '.join(command)}: {result.stdout}"
    assert rep.proc.poll() is None
    if command[0] == "dbmaintain":
        assert "wal_checkpoint(PASSIVE)" in result.stdout


@sqlite_only
def test_replication_goes_on_after_restoring_a_backup_made_before_it(live, env, tmp_path, processes):
    (tmp_path / "w0").mkdir()
    (tmp_path / "w1").mkdir()
    first = Writer(env, tmp_path / "w0")
    backed_up = {c.id for c in first.stop()}
    assert manage(env, "dbbackup").returncode == 0  # before replication: without Litestream's tables
    processes += [rep := Replicate(env, live), writer := Writer(env, tmp_path / "w1")]
    writer.wait_for(20)

    result = manage(env, "dbrestore", "--noinput")

    restored = time.time()
    assert result.returncode == 0, result.stderr
    # Past Litestream's checkpoint threshold (1,000 pages), which needs its tables back.
    execute(live, "CREATE TABLE ballast (b BLOB)", *["INSERT INTO ballast VALUES (randomblob(500000))"] * 12)
    writer.wait_for(len(writer.commits()) + 100)
    rep.catch_up(2)
    moment = time.time()
    told = writer.stop()
    assert "sync error" not in rep.output(), rep.output()

    result = manage(env, "dbrestore", "--from-replica", "--to-time", stamp(moment), "--noinput")

    assert result.returncode == 0, result.stderr
    present = writer_ids(live)
    assert backed_up <= present, "the restored backup's rows are gone"
    since = [c.id for c in told if c.started > restored and c.committed <= moment - 1]
    assert since and set(since) <= present, "commits made after the restore are missing"


@sqlite_only
def test_a_later_point_in_time_includes_an_earlier_restore_and_what_followed(live, env, tmp_path, processes):
    (tmp_path / "w0").mkdir()
    (tmp_path / "w1").mkdir()
    processes += [rep := Replicate(env, live), writer := Writer(env, tmp_path / "w0")]
    writer.wait_for(100)
    told = writer.stop()
    back_to = told[len(told) // 2].committed + 0.05
    assert manage(env, "dbrestore", "--from-replica", "--to-time", stamp(back_to), "--noinput").returncode == 0
    kept = writer_ids(live)

    since, present = write_then_restore_to_now(env, live, rep, tmp_path / "w1", processes, 100)

    assert kept <= present and since and set(since) <= present


def write_then_restore_to_now(env, live, rep, folder, processes, commits: int) -> tuple[list[int], set[int]]:
    """A new writer commits `commits` rows, then a point-in-time restore to now: (its ids a second old, ids there)."""
    began = time.time()
    processes.append(later := Writer(env, folder))
    later.wait_for(commits)
    rep.catch_up()
    moment = time.time()
    written = [c.id for c in later.stop() if c.started > began and c.committed <= moment - 1]
    result = manage(env, "dbrestore", "--from-replica", "--to-time", stamp(moment), "--noinput")
    assert result.returncode == 0, result.stderr
    return written, writer_ids(live)


@sqlite_only
def test_a_restore_while_replication_is_stopped_is_picked_up_when_it_starts_again(live, env, tmp_path, processes):
    (tmp_path / "w0").mkdir()
    (tmp_path / "w1").mkdir()
    processes += [rep := Replicate(env, live), writer := Writer(env, tmp_path / "w0")]
    writer.wait_for(30)
    assert manage(env, "dbbackup").returncode == 0
    writer.wait_for(len(writer.commits()) + 30)
    writer.stop()
    assert rep.stop() == 0
    assert manage(env, "dbrestore", "--noinput").returncode == 0  # a plain restore: TRUNCATE, nobody replicating
    kept = writer_ids(live)
    processes.append(rep := Replicate(env, live))

    since, present = write_then_restore_to_now(env, live, rep, tmp_path / "w1", processes, 60)

    assert kept <= present and since and set(since) <= present


# --- the replicate process ------------------------------------------------------------------------------


@sqlite_only
def test_replica_files_are_owner_only(live, env, processes):
    processes += [rep := Replicate(env, live), writer := Writer(env, live.parent)]
    writer.wait_for(30)
    writer.stop()
    rep.catch_up()
    trees = [live.parent / "replica", live.parent / f".{live.name}-litestream"]
    paths = [p for tree in trees for p in [tree, *tree.rglob("*")]]
    assert any(p.suffix == ".ltx" for p in paths), "nothing was replicated"
    paths += [replica.lock_path(live), live.parent / f"{live.name}.replicate.yml", replica.socket_path(live)]
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths
             if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)}
    assert wrong == {}


@sqlite_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_replicate_stops_cleanly_and_ships_the_last_commit(live, env, processes, signum):
    processes.append(rep := Replicate(env, live))
    execute(live, "UPDATE auth_permission SET name = 'last words' WHERE id = (SELECT MIN(id) FROM auth_permission)")

    assert rep.stop(signum, timeout=10) == 0

    assert not replica.is_replicating(live)
    remove_file(live)
    assert manage(env, "dbrestore", "--from-replica", "--noinput").returncode == 0
    conn = sqlite3.connect(live)
    try:
        assert conn.execute("SELECT COUNT(*) FROM auth_permission WHERE name = 'last words'").fetchone()[0] == 1
    finally:
        conn.close()


@sqlite_only
def test_other_processes_tell_that_replication_runs_from_its_lock_not_a_file(live, env, processes):
    processes.append(rep := Replicate(env, live))
    status = replica.replication_status(settings_dict(live))
    assert status.running and status.lag_seconds is not None and status.lag_seconds < 5 and status.last_sync
    assert replica.checkpoint_mode(live, "TRUNCATE") == "PASSIVE"
    second = manage(env, "replicate", timeout=30)
    assert second.returncode == 1 and f"pid {rep.proc.pid}" in second.stderr, second.stderr

    rep.proc.kill()  # no chance to clean up: the lock file stays, its lock goes with the process
    rep.proc.wait()

    assert replica.lock_path(live).exists()
    assert replica.replication_status(settings_dict(live)) == (False, None, None)
    assert replica.checkpoint_mode(live, "TRUNCATE") == "TRUNCATE"
    assert replica.checkpoint_mode(live, "PASSIVE") == "PASSIVE"


@sqlite_only
@pytest.mark.parametrize(("url", "words"), [
    ("ftp://backup.example/songs", "the scheme 'ftp://', which Litestream does not know"),
    ("replica/songs", "is a relative path"),
])
def test_a_bad_replica_url_is_one_line_and_starts_nothing(live, env, url, words):
    result = manage(dict(env, SONGSGEN_REPLICA_URL=url), "replicate")
    assert result.returncode == 1 and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not replica.lock_path(live).exists() and not (live.parent / "replica").exists()


def test_replication_is_refused_on_postgresql(subprocess_env, tmp_path):
    url = subprocess_env["DATABASE_URL"]
    if connection.vendor != "postgresql":  # never connected to: the refusal comes from the settings alone
        url = "postgres://songsgen:secret@127.0.0.1:9/songsgen"
    env = dict(subprocess_env, DATABASE_URL=url, SONGSGEN_DATA_DIR=str(tmp_path))
    for args in (("replicate",), ("dbrestore", "--from-replica", "--noinput"), ("dbrestore", "--list-restore-points"),
                 ("backupcheck", "--replica")):
        result = manage(env, *args)
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
        assert "PostgreSQL" in lines[0] or "postgresql" in lines[0], (args, lines[0])
    assert replica.replication_status({"ENGINE": "django.db.backends.postgresql", "NAME": "x"}) == (False, None, None)


# --- what can be restored, and refusals of a bad time --------------------------------------------------


@sqlite_only
def test_restore_points_are_listed_and_a_bad_time_is_refused_with_one_line(live, env, processes):
    nothing = manage(env, "dbrestore", "--list-restore-points")
    assert nothing.returncode == 0 and "No restore points" in nothing.stdout, nothing.stderr
    processes += [rep := Replicate(env, live), writer := Writer(env, live.parent)]
    writer.wait_for(30)
    writer.stop()
    rep.catch_up()

    listed = manage(env, "dbrestore", "--list-restore-points")

    assert listed.returncode == 0, listed.stderr
    assert "any moment since" in listed.stdout and "each sync" in listed.stdout and "snapshot" in listed.stdout
    before = checksum(live)
    future = stamp(time.time() + 86400)
    for args, code, words in [
        (("--to-time", "yesterday"), 2, "is not a time"),
        (("--to-time", "2026-11-30T14:02:00"), 2, "no time zone"),
        (("--to-time", future), 1, "in the future"),
        (("--to-time", "2000-01-01T00:00:00Z"), 1, "before the first restore point"),
    ]:
        result = manage(env, "dbrestore", "--from-replica", "--noinput", *args)
        assert result.returncode == code and words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    alone = manage(env, "dbrestore", "--to-time", future, "--noinput")
    assert alone.returncode == 1 and "goes with --from-replica" in alone.stderr
    assert checksum(live) == before
    assert leftovers(live.parent) == []


@sqlite_only
def test_the_first_moment_the_listing_prints_is_restorable(live, env, processes):
    processes += [rep := Replicate(env, live), writer := Writer(env, live.parent)]
    writer.wait_for(30)
    time.sleep(2.5)  # restore points over more than two whole seconds: the first is not also the newest
    writer.wait_for(len(writer.commits()) + 30)
    told = writer.stop()
    rep.catch_up()
    listed = manage(env, "dbrestore", "--list-restore-points")
    found = re.search(r"any moment since (\S+); the newest commit was shipped at (\S+)\.", listed.stdout)
    assert found, listed.stdout + listed.stderr
    since, newest = (datetime.fromisoformat(x) for x in found.groups())
    assert since < newest, listed.stdout

    result = manage(env, "dbrestore", "--from-replica", "--to-time", found.group(1), "--noinput")

    assert result.returncode == 0, result.stderr
    assert "Restored" in result.stdout and "integrity ok" in result.stdout
    present = writer_ids(live)
    assert not [c.id for c in told if c.started >= since.timestamp() and c.id in present], "a commit from after it"
    assert [c.id for c in told if c.id not in present], "the newest state, not the one asked for"


@sqlite_only
def test_backupcheck_replica_restores_the_newest_state_and_checks_it(live, env, processes):
    empty = manage(dict(env, SONGSGEN_REPLICA_URL=str(live.parent / "nowhere")), "backupcheck", "--replica")
    assert empty.returncode == 1 and "holds nothing" in empty.stderr, empty.stderr
    assert "?." not in empty.stderr  # a question, then the command's full stop
    processes += [rep := Replicate(env, live), writer := Writer(env, live.parent)]
    writer.wait_for(30)
    told = writer.stop()
    rep.catch_up()

    result = manage(env, "backupcheck", "--replica", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["errors"] == []
    assert report["tables"]["songs_song"] == len(writer_ids(live)) >= len(told)
    assert 0 <= report["age_seconds"] < 60
    time.sleep(2)
    stale = manage(env, "backupcheck", "--replica", "--max-age", str(1 / 3600))
    assert stale.returncode == 1 and "older than" in stale.stderr, stale.stderr
    assert leftovers(live.parent) == []
    assert datetime.fromisoformat(report["created"]) > datetime.now(UTC) - timedelta(minutes=1)
