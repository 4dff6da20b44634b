"""The backup file format: zstd with a checksum, streamed; gzip and plain SQLite read too.

The one place for compression; memory stays flat whatever the database's size.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import zstandard
from django.conf import settings

from songsgen.db.backup.live import CHUNK
from songsgen.db.exceptions import BackupError

FORMAT = "zstd"  # what backups are written in; `unpack` also reads "gzip" and "sqlite"
READS = "zstd, gzip or plain SQLite"  # the formats `unpack` detects, as messages name them
EXTENSION = "sqlite3.zst"  # a SQLite backup's filename extension
SQLITE_MAGIC = b"SQLite format 3\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
BUFFER = 4 * CHUNK  # compress() reads the database this much at a time


def compress(pieces: Iterable[memoryview], size: int, target: IO[bytes], *, level: int | None = None) -> None:
    """zstd-compress `size` bytes, arriving as `pieces`, into `target`, streaming, with a checksum.

    The frame records the content size, so unpack() knows a truncated backup from a whole one.
    `level`: SONGSGEN_BACKUP_ZSTD_LEVEL unless given.
    """
    level = int(settings.BACKUP_ZSTD_LEVEL) if level is None else level
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    writer = cctx.stream_writer(target, size=size, write_size=CHUNK, closefd=False)
    for piece in pieces:
        with piece:
            writer.write(piece)
    writer.flush(zstandard.FLUSH_FRAME)


def unpack(stream: IO[bytes], target: Path) -> str:
    """Write the database in a backup stream (zstd, gzip or plain) to `target`; the format.

    A truncated or damaged stream raises BackupError: the zstd frame carries its content size and a
    checksum, and gzip a CRC, both checked here.
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.seek(0)
    head = stream.read(len(SQLITE_MAGIC))
    rest = _Prefixed(head, stream)
    with open(target, "wb") as out:
        if head.startswith(ZSTD_MAGIC):
            dobj = zstandard.ZstdDecompressor().decompressobj()
            try:
                while chunk := rest.read(CHUNK):
                    out.write(dobj.decompress(chunk))
                    if dobj.eof:
                        break
            except zstandard.ZstdError as exc:
                raise BackupError(f"the zstd data is damaged ({exc})") from exc
            if not dobj.eof:
                raise BackupError("the zstd data ends early: the backup file is truncated")
            return "zstd"
        if head.startswith(GZIP_MAGIC):
            try:
                # GzipFile reads forward only unless asked to seek, which _Prefixed cannot.
                with gzip.GzipFile(fileobj=rest, mode="rb") as gz:  # type: ignore[call-overload]
                    shutil.copyfileobj(gz, out, CHUNK)
            except (OSError, EOFError) as exc:
                raise BackupError(f"the gzip data is damaged or truncated ({exc})") from exc
            return "gzip"
        if head == SQLITE_MAGIC:
            shutil.copyfileobj(rest, out, CHUNK)
            return "sqlite"
    raise BackupError("it is not a backup: neither zstd, gzip nor an SQLite database")


class _Prefixed:
    """A read-only stream: `head`, then the rest of `stream`."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self.head, self.stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if self.head:
            if size < 0:
                data, self.head = self.head + self.stream.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            if len(data) < size:
                data += self.stream.read(size - len(data))
            return data
        return self.stream.read(size)
