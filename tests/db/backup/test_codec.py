"""The backup format (songsgen/db/backup/codec.py): what is written reads back byte for byte, and a damaged
or foreign file is refused with a reason."""

from __future__ import annotations

import gzip
import random
import sqlite3
import subprocess
from pathlib import Path

import pytest
import zstandard

from songsgen.db.backup import BACKUP_FORMAT, compress, unpack
from songsgen.db.exceptions import BackupError


def _database_bytes(tmp_path: Path) -> bytes:
    """A real SQLite file of about 3 MB: text that compresses, and random bytes that do not."""
    path = tmp_path / "source.sqlite3"
    conn = sqlite3.connect(path)
    rng = random.Random(5)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT, blob BLOB)")
    conn.executemany("INSERT INTO t (body, blob) VALUES (?, ?)",
                     [(f"verse {i} " * 40, rng.randbytes(200)) for i in range(5000)])
    conn.commit()
    conn.close()
    return path.read_bytes()


def _pieces(data: bytes, size: int = 300_000) -> list[memoryview]:
    return [memoryview(data[i:i + size]) for i in range(0, len(data), size)]


def _packed(data: bytes, tmp_path: Path, **level: int) -> Path:
    target = tmp_path / "backup.sqlite3.zst"
    with open(target, "wb") as out:
        compress(_pieces(data), len(data), out, **level)
    return target


def test_compressed_backup_unpacks_to_the_same_bytes_and_records_its_size_and_checksum(tmp_path):
    data = _database_bytes(tmp_path)
    packed = _packed(data, tmp_path)

    frame = zstandard.get_frame_parameters(packed.read_bytes())
    assert frame.content_size == len(data) and frame.has_checksum
    assert packed.stat().st_size < len(data) // 2
    with open(packed, "rb") as stream:
        assert unpack(stream, tmp_path / "out.sqlite3") == BACKUP_FORMAT == "zstd"
    assert (tmp_path / "out.sqlite3").read_bytes() == data


def test_the_level_comes_from_the_setting_unless_given(tmp_path, settings):
    data = _database_bytes(tmp_path)
    settings.BACKUP_ZSTD_LEVEL = 19
    by_setting = _packed(data, tmp_path).read_bytes()
    assert by_setting == _packed(data, tmp_path, level=19).read_bytes()
    assert by_setting != _packed(data, tmp_path, level=1).read_bytes()


def test_unpack_reads_a_pipe_that_cannot_seek(tmp_path):
    data = _database_bytes(tmp_path)
    packed = _packed(data, tmp_path)
    with subprocess.Popen(["cat", str(packed)], stdout=subprocess.PIPE) as cat:
        assert unpack(cat.stdout, tmp_path / "out.sqlite3") == "zstd"
    assert (tmp_path / "out.sqlite3").read_bytes() == data


@pytest.mark.parametrize(("kind", "encode"), [("gzip", gzip.compress), ("sqlite", lambda data: data)])
def test_gzip_and_plain_sqlite_backups_unpack_too(kind, encode, tmp_path):
    data = _database_bytes(tmp_path)
    (tmp_path / "backup").write_bytes(encode(data))
    with open(tmp_path / "backup", "rb") as stream:
        assert unpack(stream, tmp_path / "out.sqlite3") == kind
    assert (tmp_path / "out.sqlite3").read_bytes() == data


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda packed, data: packed[: len(packed) // 2], "the zstd data ends early: the backup file is truncated"),
    (lambda packed, data: packed[:200] + bytes(b ^ 0xFF for b in packed[200:264]) + packed[264:],
     "the zstd data is damaged"),
    (lambda packed, data: gzip.compress(data)[:-100], "the gzip data is damaged or truncated"),
    (lambda packed, data: random.Random(1).randbytes(4096), "it is not a backup"),
    (lambda packed, data: b"", "it is not a backup"),
])
def test_a_damaged_or_foreign_file_is_refused_with_its_reason(damage, reason, tmp_path):
    data = _database_bytes(tmp_path)
    (tmp_path / "bad").write_bytes(damage(_packed(data, tmp_path).read_bytes(), data))
    with open(tmp_path / "bad", "rb") as stream, pytest.raises(BackupError) as refused:
        unpack(stream, tmp_path / "out.sqlite3")
    assert str(refused.value).startswith(reason)
