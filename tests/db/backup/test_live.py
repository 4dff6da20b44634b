"""The live file held still and copied as of one instant (songsgen/db/backup/live.py), while another
process writes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from concurrent.futures import Future

import pytest

from songsgen.db.backup import check_errors, copy_into_live, frozen_file, safety_copy
from songsgen.db.backup import live as live_module
from tests.db.backup.helpers import frames_past_the_file, integrity, table_checksums

FROZEN_WRITER = textwrap.dedent(
    """
    import sqlite3, sys
    for i in range(30):  # a new connection each time: closing the last one tries a checkpoint too
        conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t (body) VALUES (?)", [("z" * 500,)] * 50)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        conn.close()
    """
)


@pytest.mark.parametrize("obstacle", [None, "a reader pins the WAL", "a writer holds the lock"])
def test_frozen_file_holds_the_database_file_still_while_another_process_writes(obstacle, tmp_path):
    """Or gives way (None) when it cannot: the callers then take a backup-API copy."""
    live = tmp_path / "live.db"
    writer, reader = frames_past_the_file(live, reader_pins_the_wal=obstacle == "a reader pins the WAL")
    wait = {}
    if obstacle == "a writer holds the lock":
        wait = {"lock_wait": 0.2}  # seconds frozen_file() waits for the write lock before it gives way
        writer.execute("BEGIN IMMEDIATE")

    with frozen_file(live, timeout=5, **wait) as frozen:
        if obstacle:
            assert frozen is None
        else:
            before = os.pread(frozen.fd, frozen.size, 0)
            subprocess.run([sys.executable, "-c", FROZEN_WRITER, str(live)], check=True, timeout=60)
            assert os.pread(frozen.fd, frozen.size, 0) == before  # not a byte changed while others wrote
            assert frozen.reader.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2100

    if writer.in_transaction:
        writer.execute("ROLLBACK")
    if not obstacle:  # those bytes alone are the database as of the instant frozen_file began
        copy = tmp_path / "copy.db"
        copy.write_bytes(before)
        assert integrity(copy) == "ok"
        assert sqlite3.connect(copy).execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2100
        assert sqlite3.connect(live).execute("SELECT COUNT(*) FROM t").fetchone()[0] == 2100 + 30 * 50
    reader.close()
    writer.close()


@pytest.mark.parametrize("reader_pins_the_wal", [False, True])
def test_safety_copy_is_the_database_as_of_one_instant(reader_pins_the_wal, tmp_path, api_copies):
    """Copied from the file while frozen_file() holds it still, or by the backup API when it cannot."""
    live, copy = tmp_path / "live.db", tmp_path / "copy.db"
    writer, reader = frames_past_the_file(live, reader_pins_the_wal=reader_pins_the_wal)
    os.close(os.open(copy, os.O_WRONLY | os.O_CREAT, 0o600))

    safety_copy(live, copy, timeout=5, api_copy=api_copies.spy)

    assert len(api_copies) == int(reader_pins_the_wal)
    assert integrity(copy) == "ok"
    assert table_checksums(copy) == table_checksums(live)
    reader.close()
    writer.close()


@contextlib.contextmanager
def inline(piece, work):
    """`live.beside` without its second thread: the work done first, in the caller's thread."""
    done = Future()
    done.set_result(work())
    yield done


@pytest.mark.parametrize("threaded", [True, False])
def test_the_io_tuning_changes_no_byte(threaded, tmp_path, monkeypatch):
    """With the second threads of `beside` (the one machine-specific tuning) or without, the same copies."""
    if not threaded:
        monkeypatch.setattr(live_module, "beside", inline)
    live, copy, other = tmp_path / "live.db", tmp_path / "copy.db", tmp_path / "other.db"
    writer, reader = frames_past_the_file(live, reader_pins_the_wal=False)
    os.close(os.open(copy, os.O_WRONLY | os.O_CREAT, 0o600))
    safety_copy(live, copy, timeout=5)
    assert table_checksums(copy) == table_checksums(live)

    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO t (body) VALUES (?)", [("w" * 700,)] * 3000)
    conn.commit()
    conn.close()
    checked: list[str] = []
    checkpointed, errors, held = copy_into_live(other, live, timeout=5, step=64 * 1024,
                                                before_commit=lambda: checked.append("before the commit"),
                                                alongside=lambda: check_errors(live, quick=True))
    assert (checkpointed, errors, checked) == (True, [], ["before the commit"])
    assert held > 0  # what writers waited: the copy's transaction, from its first step to the commit
    assert table_checksums(live) == table_checksums(other)
    reader.close()
    writer.close()
