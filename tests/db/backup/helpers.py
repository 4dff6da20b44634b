"""Helpers of the backup tests: real SQLite files read and damaged, songs written in bulk, backups found."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
from pathlib import Path

import pytest
import zstandard
from django.db import connection

from songsgen.db.backup import database_label, list_backups, page_size, songsgen_errors, unpack
from tests.factories import make_user

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="SQLite snapshot and restore; PostgreSQL backups run pg_dump"
)


def back_up(run) -> None:
    """`manage.py dbbackup`, which must succeed."""
    result = run("dbbackup")
    assert result.returncode == 0, result.stderr


def live_path() -> Path:
    return Path(connection.settings_dict["NAME"])


def label() -> str:
    return database_label(connection.settings_dict)


def backups(folder: Path) -> list[str]:
    """Finished-looking backups of the test database in `folder`, newest first."""
    names = os.listdir(folder) if folder.exists() else []
    return [b.name for b in list_backups(names, label())]


def table_checksums(path: Path) -> dict[str, str]:
    """A digest of every row of every table of the SQLite file at `path`."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        # Ordinary tables only: a full-text index's shadow tables hold its internal layout, which
        # differs after the same rows were added and removed; its content is the songs table's.
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: hashlib.sha256(repr(conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall()).encode())
                .hexdigest() for t in tables}
    finally:
        conn.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return ",".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def open_backup(path: Path, tmp_path: Path) -> Path:
    """Unpack a backup file into a plain SQLite file for inspection."""
    target = tmp_path / f"unpacked-{path.name}.sqlite3"
    with open(path, "rb") as stream:
        unpack(stream, target)
    return target


def add_songs(n: int, *, prefix: str, lyrics_kb: int = 1) -> None:
    """n songs with sizeable lyrics, written fast (bulk), committed."""
    from songs.models import Song

    user = make_user()
    rng = random.Random(n)
    words = ["love", "night", "river", "fire", "echo", "rain", "dream", "city", "heart", "sky"]
    Song.objects.bulk_create(
        [Song(user=user, title=f"{prefix}-{i}", genre="pop",
              lyrics=" ".join(rng.choice(words) for _ in range(lyrics_kb * 180))) for i in range(n)],
        batch_size=2000,
    )


def frames_past_the_file(live: Path, *, reader_pins_the_wal: bool) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """A WAL database of 2,100 rows, the last 100 committed in frames no checkpoint has copied into the file
    yet; with a reader whose older read transaction keeps them out if `reader_pins_the_wal`. (writer, reader)"""
    writer = sqlite3.connect(live, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    with writer:
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO t (body) VALUES (?)", [("x" * 500,)] * 2000)
    reader = sqlite3.connect(live, isolation_level=None)
    if reader_pins_the_wal:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM t").fetchone()
    with writer:
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO t (body) VALUES (?)", [("y" * 500,)] * 100)
    assert Path(f"{live}-wal").stat().st_size > 0
    return writer, reader


def truncate_wal(live: Path) -> None:
    """Empty the WAL, so that it grows by what the test does next only."""
    connection.close()
    conn = sqlite3.connect(live, isolation_level=None)
    try:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        conn.close()


def wal_size(live: Path) -> int:
    wal = Path(f"{live}-wal")
    return wal.stat().st_size if wal.exists() else 0


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def damage_pages(path: Path) -> None:
    """Overwrite pages in the middle of the SQLite file at `path`: it still opens, and is still a songsgen
    database, but fails integrity_check."""
    size = page_size(path)
    conn = sqlite3.connect(path)
    try:  # leaf pages of the songs table (a free page's content is never checked)
        leaves = [r[0] for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'songs_song' AND pagetype = 'leaf' ORDER BY pageno")]
    finally:
        conn.close()
    with open(path, "r+b") as f:
        for page in leaves[len(leaves) // 2: len(leaves) // 2 + 8]:
            f.seek((page - 1) * size + 16)
            f.write(b"\xab" * (size - 32))
    assert integrity(path) != "ok" and songsgen_errors(path) == []


def damaged_backup(stored: Path, tmp_path: Path) -> Path:
    plain = open_backup(stored, tmp_path)
    damage_pages(plain)
    return plain
