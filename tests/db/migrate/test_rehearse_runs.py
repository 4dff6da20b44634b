"""`migrate --rehearse(-only)` as real processes around the rehearsal: the snapshots it keeps, the room and the
backup folder it needs, a rehearsal process that dies, Ctrl-C/SIGTERM, and the scratch copies a SIGKILL leaves.

The plan is tests/migrations_fixture's (installed in the subprocesses through tests/settings_fixture.py); its 0003
hangs, or SIGKILLs its own process, on demand (SONGSGEN_FIXTURE_MODE).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from django.db import connection

from songsgen.db.migrate.snapshot import database_size
from tests.conftest import REPO
from tests.db.live import hanging_migrate, state

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite scratch copy beside the snapshot")
KEEP = 3  # SONGSGEN_MIGRATE_KEEP_SNAPSHOTS's default, docs/migrations.md


@pytest.fixture
def backups(tmp_path) -> Path:
    """The backup folder of the migrate subprocesses (fixture_env: SONGSGEN_DATA_DIR=tmp_path)."""
    return tmp_path / "backups"


def scratch_copies(backups: Path) -> list[str]:
    """Scratch copies: files beside the snapshots, or databases on the server."""
    if connection.vendor == "sqlite":
        return sorted(p.name for p in backups.glob(".rehearse-*")) if backups.is_dir() else []
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'songsgen\\_rehearse\\_%'")
        return sorted(row[0] for row in cursor.fetchall())


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_gone(pid: int, timeout: float = 30) -> None:
    """Until `pid` has exited (a zombie nobody reaps counts as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                return
        except (OSError, IndexError):
            return
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


@contextmanager
def mounted(target: Path, *mounts: list[str]) -> Iterator[None]:
    """`mount OPTIONS… target` for each of `mounts`, undone after the block (root only); the test is skipped where
    mounting is not permitted."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = 0
    try:
        for options in mounts:
            result = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"cannot mount here: {result.stderr.strip()}")
            done += options[0] != "-o"  # a remount changes the mount before it
        yield
    finally:
        for _ in range(done):
            subprocess.run(["umount", str(target)], check=True)


@pytest.fixture
def hanging(fixture_env, tmp_path) -> Iterator[Callable[..., subprocess.Popen]]:
    """`migrate migrations_fixture 0003 --rehearse-only`, returned once its rehearsal hangs in 0003; killed after
    the test whatever happened (it holds the migrate lock)."""
    started: list[subprocess.Popen] = []

    def start(**popen) -> subprocess.Popen:
        started.append(hanging_migrate(fixture_env, tmp_path, "--rehearse-only", **popen))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def rows(transactional_db) -> None:
    from tests.factories import make_song, make_user

    user = make_user()
    for i in range(4):
        make_song(user=user, title=f"keep {i}")


# --- snapshots ----------------------------------------------------------------------------------------
def test_rehearsals_keep_only_the_newest_snapshots(migrate, rows, backups):
    for _ in range(5):
        result = migrate("migrations_fixture", "0003", "--rehearse-only")
        assert result.returncode == 0, result.stderr
    assert len(list(backups.glob("pre-migrate-*"))) == KEEP
    assert scratch_copies(backups) == []


# --- room and the backup folder --------------------------------------------------------------------------
@sqlite_only
def test_no_room_for_the_scratch_copy_is_refused_before_copying(migrate, rows, backups):
    before = state()
    with closing(sqlite3.connect(connection.settings_dict["NAME"])) as db:  # the whole database in the file
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    size = database_size(connection)
    # Room for the snapshot (size x 1.1, no margin), not for the snapshot and its scratch copy beside it.
    with mounted(backups, ["-t", "tmpfs", "-o", f"size={int(size * 1.6) // 1024 + 1}k,mode=0700", "tmpfs"]):
        result = migrate("migrations_fixture", "0003", "--rehearse-only",
                         extra_env={"SONGSGEN_MIGRATE_BACKUP_MARGIN_MB": "0"})
        assert result.returncode == 2, result.stderr
        line = one_line(result.stderr)
        assert "Not enough room for the backup and the rehearsal's scratch copy in" in line
        assert str(backups) in line and "MiB needed" in line and "Nothing was changed" in line
        assert list(backups.iterdir()) == []  # no snapshot, no scratch copy, no temporary file
    assert state() == before


@pytest.mark.parametrize("args", [(), ("--rehearse", "--noinput")], ids=["migrate", "rehearse"])
def test_a_read_only_backup_folder_is_refused_in_one_line(migrate, rows, backups, args):
    before = state()
    with mounted(backups, ["--bind", str(backups)], ["-o", "remount,ro,bind"]):
        result = migrate("migrations_fixture", "0003", *args)
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert f"The backup folder {backups} is not writable (Read-only file system)" in line
    assert "Nothing was changed" in line
    assert state() == before


# --- the rehearsal process ---------------------------------------------------------------------------------
def test_a_rehearsal_process_that_dies_is_one_line(migrate, rows, backups):
    before = state()
    result = migrate("migrations_fixture", "0003", "--rehearse-only", extra_env={"SONGSGEN_FIXTURE_MODE": "die"})
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert "the rehearsal process was killed by signal 9 without a report" in line
    assert "Nothing was changed" in line
    assert scratch_copies(backups) == []
    assert list(backups.glob("pre-migrate-*")) == []  # the snapshot taken for it is removed too
    assert state() == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_rehearsal_process_and_removes_the_copy(hanging, rows, backups, sig):
    before = state()
    proc = hanging(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    [child] = children_of(proc.pid)
    assert scratch_copies(backups)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "The rehearsal was interrupted" in one_line(err)
    wait_gone(child, timeout=5)
    assert scratch_copies(backups) == []
    assert state() == before


# --- what a SIGKILL leaves -----------------------------------------------------------------------------------
def killed_rehearsal(hanging: Callable[..., subprocess.Popen], fixture_env: dict[str, str], backups: Path
                     ) -> list[str]:
    """SIGKILL a `migrate --rehearse-only` half-way through its rehearsal; the scratch copies it left.

    While it runs, dbcheck names its copy and leaves it alone."""
    proc = hanging(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = children_of(proc.pid)
    running = dbcheck(fixture_env)
    copies = scratch_copies(backups)
    assert copies and "scratch copy kept: another migrate (pid" in running.stdout, running.stdout
    proc.kill()
    proc.wait()
    for child in children:
        wait_gone(child)  # the rehearsal process ends with its parent
    assert scratch_copies(backups) == copies
    if connection.vendor == "sqlite":  # the copy and the WAL files of its open connection
        assert {name.rsplit(".", 1)[1] for name in copies} == {"sqlite3", "sqlite3-wal", "sqlite3-shm"}, copies
    return copies


def dbcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "manage.py"), "dbcheck", "--sizes"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_dbcheck_removes_what_a_killed_rehearsal_left(hanging, fixture_env, rows, backups):
    copies = killed_rehearsal(hanging, fixture_env, backups)
    result = dbcheck(fixture_env)
    assert result.returncode == 0, result.stderr
    scratch = next(name for name in copies if not name.endswith(("-wal", "-shm")))
    assert "removed the" in result.stdout and scratch in result.stdout and "rehearsal that was killed" in result.stdout
    assert scratch_copies(backups) == []


def test_the_next_rehearsal_removes_what_a_killed_one_left(hanging, migrate, fixture_env, rows, backups):
    copies = killed_rehearsal(hanging, fixture_env, backups)
    result = migrate("migrations_fixture", "0003", "--rehearse-only")
    assert result.returncode == 0, result.stderr
    scratch = next(name for name in copies if not name.endswith(("-wal", "-shm")))
    assert "Removed the" in result.stderr and scratch in result.stderr
    assert scratch_copies(backups) == []
    assert os.path.isdir(backups)


@sqlite_only
def test_dbcheck_knows_older_copies_and_leaves_other_databases_alone(fixture_env, rows, backups):
    backups.mkdir(mode=0o700)
    older = [backups / ".rehearse-k3j_9x0a.sqlite3", backups / ".rehearse-k3j_9x0a.sqlite3-wal"]  # before the name
    other = backups / ".rehearse-otherdb-ab12cd34.sqlite3"  # another database's, sharing the folder
    for path in [*older, other]:
        path.write_bytes(b"\0" * 4096)
    result = dbcheck(fixture_env)
    assert result.returncode == 0, result.stderr
    assert f"removed the 8 KiB scratch copy {older[0]} left by a rehearsal that was killed" in result.stdout
    assert [p.name for p in backups.iterdir()] == [other.name]
