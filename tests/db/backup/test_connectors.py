"""The SQLite connector's backup, in this process (songsgen/db/backup/connectors.py)."""

from __future__ import annotations

import sqlite3

import pytest

from songsgen.db.backup import TEMP_PREFIX, SqliteBackupConnector, unpack
from tests.db.backup.helpers import add_songs, integrity, live_path, sqlite_only, table_checksums


@sqlite_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("reader_pins_the_wal", [False, True])
def test_backup_is_packed_from_the_held_file_or_a_backup_api_copy(reader_pins_the_wal, settings, tmp_path,
                                                                   api_copies):
    """Straight from the database file when frozen_file() can hold it; else from a backup-API copy."""
    add_songs(500, prefix="p")
    live = live_path()
    reader = sqlite3.connect(live, isolation_level=None)
    if reader_pins_the_wal:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM songs_song").fetchone()
    add_songs(100, prefix="q")  # committed past the reader's state
    expected = table_checksums(live)
    settings.BACKUP_DIR = tmp_path / "work"

    dump = SqliteBackupConnector("default", api_copy=api_copies.spy).create_dump()

    copy = tmp_path / "copy.sqlite3"
    with dump:
        assert unpack(dump, copy) == "zstd"
    assert len(api_copies) == int(reader_pins_the_wal)
    assert integrity(copy) == "ok"
    assert table_checksums(copy) == expected
    assert not list((tmp_path / "work").glob(f"{TEMP_PREFIX}*"))  # no copy or packed file left behind
    reader.close()
