"""Consistent SQLite backups and restores that never write over a live file, for django-dbbackup.

Backup: a snapshot of the live database as of one instant while writers go on. A checkpoint folds
the WAL into the database file, and a read transaction begun at that moment reads the file alone;
while it lasts no checkpoint may write into the file (frozen_file()), so the file's bytes are that
snapshot. They are zstd-compressed straight from the file in a streaming pass (memory stays flat,
whatever the database's size) while `PRAGMA quick_check` of the same snapshot runs beside, in that
read transaction. When a reader of an older state keeps part of the WAL out of the file, SQLite's
backup API copies the database into a temporary file in one step (`backup(pages=-1)`, one read
transaction), which is checked and compressed the same way. `AtomicFileSystemStorage` writes every
backup file under a temporary name, owner-only, and renames it when complete, so a crash never
leaves a file that looks whole.

Restore: the backup is unpacked into a temporary file beside the live database while a safety copy
of the live database is taken, and must be a songsgen database; then the backup API copies it
*into* the live database in steps, inside one write transaction, while `integrity_check` of the
unpacked file runs beside the copy. The last step, which commits, waits for that check: a backup
that fails it is rolled back and no other connection ever sees any of it. Other connections see
the old database or the new one, never a half-written file. A checkpoint then folds the WAL into
the database file and fsyncs it while the live database is checked again, and the safety copy is
removed only then.

Django and django-dbbackup only: apps are found through the app registry, never by name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import logging
import mmap
import os
import re
import secrets
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import zstandard
from dbbackup import settings as dbbackup_settings
from dbbackup import utils as dbbackup_utils
from dbbackup.db.base import BaseDBConnector
from dbbackup.db.postgresql import PgDumpBinaryConnector
from django.conf import settings
from django.core.files.storage import FileSystemStorage

from songsgen.db import guards, pgdump, replica, safetycopies

CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough to keep memory flat
STEP = 64 * CHUNK  # bytes a restore copies into the live database per backup-API step
LOCK_WAIT = 2.0  # seconds frozen_file() waits for the write lock before it gives way
TEMP_PREFIX = ".songsgen-tmp-"  # every temporary file we make; see remove_stale_temp_files()
SQLITE_MAGIC = b"SQLite format 3\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
SQLITE_EXTENSION = "sqlite3.zst"

Log = Callable[[str], None]
logger = logging.getLogger("dbbackup.command")  # django-dbbackup's command logger, bound to --verbosity


class BackupError(Exception):
    """A backup, restore or check cannot go on; the message says why and what to do."""


class RestoreUndone(BackupError):
    """The restored database failed its check and the live database was put back from the safety copy."""


class RestoreUnverified(BackupError):
    """The restored database failed its check and there was no earlier database to put back."""


# --- files ------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def private_dir(folder: Path, mode: int = 0o700) -> Path:
    """Create `folder` owner-only whatever the umask, if missing: backups are nobody else's."""
    try:
        folder.mkdir(mode=mode, parents=True)
    except FileExistsError:
        return folder  # whoever made it chose its mode
    os.chmod(folder, mode)  # mkdir's mode passes through the umask
    return folder


def temp_path(folder: Path, suffix: str = "") -> Path:
    """Create an empty owner-only file in `folder` with a temporary-looking name naming our pid."""
    private_dir(folder)
    while True:
        path = folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return path
        except FileExistsError:
            continue


def remove_file(path: Path) -> None:
    """Remove a database file and the journal files SQLite may keep beside it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary files left by processes that died (a SIGKILL cannot clean up after itself)."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(f"{TEMP_PREFIX}*"):
        match = re.match(rf"{re.escape(TEMP_PREFIX)}(\d+)-", path.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_into(source: IO[bytes], fd: int) -> None:
    """Copy `source` from its start into the open file descriptor `fd`."""
    try:
        in_fd = source.fileno()
        info = os.fstat(in_fd)
    except (AttributeError, OSError, ValueError):
        in_fd = None
    if in_fd is not None and stat.S_ISREG(info.st_mode):
        size = info.st_size
        offset = 0  # the kernel copies: no buffer in this process, whatever the size
        while offset < size:
            sent = os.sendfile(fd, in_fd, offset, min(size - offset, 1 << 30))
            if sent == 0:
                break
            offset += sent
        return
    with contextlib.suppress(AttributeError, OSError, ValueError):
        source.seek(0)  # a pipe cannot seek, and is read from where it stands
    while chunk := source.read(CHUNK):
        _write_all(fd, chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _own_temp_file(source: Any, folder: Path) -> Path | None:
    """The path of `source` if it is one of our temporary files in `folder`, else None."""
    inner = getattr(source, "file", source)  # django.core.files.File wraps the real file
    name = getattr(inner, "name", None)
    if not isinstance(name, str) or not Path(name).name.startswith(TEMP_PREFIX):
        return None
    path = Path(name)
    try:
        if path.parent.resolve() != folder.resolve() or not stat.S_ISREG(os.fstat(inner.fileno()).st_mode):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return path


def atomic_write(source: IO[bytes], target: Path, *, mode: int = 0o600) -> None:
    """Write `source` to `target` under a temporary name, fsync, and link it into place when complete.

    Never replaces an existing file (FileExistsError): a backup is never written over another.
    """
    target = Path(target)
    if (own := _own_temp_file(source, target.parent)) is not None:
        # Already a complete temporary file of ours on this file system: flush it and give it its
        # name, instead of copying it (the backup of a large database is hundreds of MB).
        source.flush()
        os.fsync(source.fileno())
        os.chmod(own, mode)
        os.link(own, target)  # the temporary name goes when its owner closes the file
        _fsync_dir(target.parent)
        return
    tmp = temp_path(target.parent, ".part")
    try:
        fd = os.open(tmp, os.O_WRONLY)
        try:
            _copy_into(source, fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.link(tmp, target)  # atomic, and unlike rename() it refuses to replace an existing file
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(target.parent)


class AtomicFileSystemStorage(FileSystemStorage):
    """FileSystemStorage whose files appear only when complete: temporary name, fsync, link."""

    def _save(self, name: str, content: Any) -> str:
        while True:
            full_path = Path(self.path(name))
            private_dir(full_path.parent, self.directory_permissions_mode or 0o700)
            try:
                atomic_write(content, full_path, mode=self.file_permissions_mode or 0o600)
            except FileExistsError:
                name = self.get_available_name(name)  # the same race Django's own _save handles
                continue
            return str(name).replace("\\", "/")

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        try:
            return super().listdir(path)
        except FileNotFoundError:  # no backup yet: the folder appears with the first one
            return [], []


# --- naming ---------------------------------------------------------------------------------------


def database_label(settings_dict: dict[str, Any]) -> str:
    """The database's own name as backup filenames carry it: the SQLite file's stem, or the PG name."""
    name = str(settings_dict["NAME"])
    if settings_dict["ENGINE"].endswith("sqlite3"):
        name = Path(name).name
    return name.split(".")[0]


def utc_stamp(moment: datetime | None = None) -> str:
    """The time part of a backup's filename, always in UTC."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime(dbbackup_settings.DATE_FORMAT)


def backup_filename(extension: str, label: str, servername: str | None = None, moment: datetime | None = None) -> str:
    """A backup's filename from DBBACKUP_FILENAME_TEMPLATE, with the database's name and UTC time."""
    return dbbackup_utils.filename_generate(extension, label, servername, wildcard=utc_stamp(moment))


@dataclass(frozen=True)
class StoredBackup:
    """A backup file in storage: its name and the UTC time its name records."""

    name: str
    created: datetime

    @property
    def encrypted(self) -> bool:
        return self.name.endswith(".gpg")


def backup_created(name: str) -> datetime | None:
    """The UTC time a backup's filename records, or None."""
    stamp = dbbackup_utils.filename_to_datestring(name)
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, dbbackup_settings.DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def list_backups(names: Iterable[str], label: str) -> list[StoredBackup]:
    """The backups of database `label` among `names`, newest first (metadata and temporary files left out)."""
    found = []
    for name in names:
        if name.endswith(".metadata") or name.startswith(TEMP_PREFIX):
            continue
        stamp = dbbackup_utils.filename_to_datestring(name)
        created = backup_created(name)
        if not stamp or not created or not name.startswith(f"{label}-{stamp}"):
            continue  # another database's backup, or not a backup at all
        found.append(StoredBackup(name, created))
    return sorted(found, key=lambda b: (b.created, b.name), reverse=True)


def prune_backups(storage: Any, label: str, *, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Delete all but the newest `keep` backups of `label`; never one named in `protect`. Returns the deleted."""
    if keep < 1:
        raise BackupError(f"Retention must keep at least one backup, got {keep}: set SONGSGEN_BACKUP_KEEP >= 1.")
    backups = list_backups(storage.listdir("")[1], label)
    protected = {name for name in protect}
    kept = [b for b in backups if b.name in protected]
    for backup in backups:
        if len(kept) >= keep:
            break
        if backup not in kept:
            kept.append(backup)
    deleted = []
    for backup in backups:
        if backup in kept:
            continue
        storage.delete(backup.name)
        if storage.exists(f"{backup.name}.metadata"):
            storage.delete(f"{backup.name}.metadata")
        deleted.append(backup.name)
    return deleted


def latest_backup(storage: Any, label: str, *, encrypted: bool | None = None) -> StoredBackup:
    """The newest backup of database `label` in `storage`."""
    backups = [b for b in list_backups(storage.listdir("")[1], label) if encrypted is None or b.encrypted == encrypted]
    if not backups:
        location = getattr(storage, "location", "the backup storage")
        raise BackupError(f"No backup of database {label!r} in {location}; make one with `manage.py dbbackup`.")
    return backups[0]


# --- SQLite ---------------------------------------------------------------------------------------


def sqlite_path(settings_dict: dict[str, Any]) -> Path:
    """The file of an SQLite database; in-memory databases cannot be backed up this way."""
    name = str(settings_dict["NAME"])
    if not name or name == ":memory:" or "mode=memory" in name:
        raise BackupError(f"Database {name!r} lives in memory; there is no file to back up or restore.")
    return Path(name.removeprefix("file:").split("?")[0]).resolve()


def _connect(path: Path, timeout: float, **options: Any) -> sqlite3.Connection:
    # Our own connection: no Django pragmas (a small default page cache keeps memory flat).
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, **options)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn


def snapshot(source: Path, target: Path, *, timeout: float) -> None:
    """Copy the live database `source` into `target` in one backup-API step: one consistent instant."""
    src = _connect(source, timeout)
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            # The copy only has to be durable once compressed and stored, not page by page.
            dst.execute("PRAGMA journal_mode = OFF")
            dst.execute("PRAGMA synchronous = OFF")
            src.backup(dst, pages=-1)
            # A plain rollback-journal file: it opens anywhere, even read-only, with no -wal beside it.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


@dataclass(frozen=True)
class FrozenFile:
    """The live database file held still: a read transaction on it, a descriptor of it, its size in bytes."""

    reader: sqlite3.Connection
    fd: int
    size: int


@contextlib.contextmanager
def frozen_file(live: Path, *, timeout: float) -> Iterator[FrozenFile | None]:
    """The database file held still while the context lasts, its bytes the database as of one instant; or None.

    In WAL mode a read transaction that begins when every committed frame is already in the file reads
    the file alone, and no checkpoint can copy a frame into the file while such a reader lasts: the
    file's bytes stay put while writers go on appending to the WAL. We fold the WAL in with a
    checkpoint, then, holding the write lock for those few milliseconds so nothing can commit in
    between, checkpoint what is left and open the read transaction. None when a reader of an older
    state keeps part of the WAL out of the file, a write transaction holds the lock longer than
    LOCK_WAIT seconds, or the database is not in WAL mode.

    The descriptor is opened before the connections and closed after them: closing any descriptor of a
    database file drops every POSIX lock the process holds on it, SQLite's included
    (https://sqlite.org/howtocorrupt.html, 2.2), and another process could then checkpoint into it. So
    the caller must not open and close descriptors of the file of its own meanwhile. The reader may be
    used from another thread.
    """
    fd = os.open(live, os.O_RDONLY)
    try:
        reader = _connect(live, timeout, check_same_thread=False)
        try:
            reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # the bulk, without holding writers up
            if not _begin_reading_the_file(reader, live, timeout):
                yield None
            else:
                pages = reader.execute("PRAGMA page_count").fetchone()[0]
                size = int(pages) * int(reader.execute("PRAGMA page_size").fetchone()[0])
                yield FrozenFile(reader, fd, size)
        finally:
            reader.close()
    finally:
        os.close(fd)


def _begin_reading_the_file(reader: sqlite3.Connection, live: Path, timeout: float) -> bool:
    """Begin a read transaction on `reader` that reads the file alone; False where it cannot be had."""
    lock = _connect(live, min(timeout, LOCK_WAIT))
    try:
        try:
            lock.execute("BEGIN IMMEDIATE")  # nothing commits between the checkpoint and the read
        except sqlite3.OperationalError:  # a long write transaction: the caller takes another way
            return False
        try:
            busy, frames, folded = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            # A frame is not in the file; or (-1, -1) not in WAL mode, where a reader would hold every
            # writer's commit off for the whole read: the backup API's read is shorter.
            if busy or frames != folded or frames < 0:
                return False
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return True
        finally:
            lock.execute("ROLLBACK")
    finally:
        lock.close()


def safety_copy(live: Path, target: Path, *, timeout: float) -> None:
    """Copy the live database into `target` as of one instant, past the page cache where it can.

    A copy of the file while frozen_file() holds it still, without stopping writers. The copy skips
    the page cache (O_DIRECT): nobody reads it unless the restore fails, and 2 GB of dirty pages would
    make the kernel write them back while the unpacked backup competes for the same memory. When a
    reader keeps part of the WAL out of the file, the backup API takes the copy instead (snapshot()).
    """
    with frozen_file(live, timeout=timeout) as frozen:
        if frozen is not None:
            _copy_past_cache(frozen.fd, frozen.size, target)
            return
    snapshot(live, target, timeout=timeout)


def _copy_past_cache(in_fd: int, size: int, target: Path) -> None:
    """Copy the first `size` bytes of `in_fd` over the existing file `target`, with O_DIRECT where allowed."""
    buffer = mmap.mmap(-1, 8 * CHUNK)  # page-aligned, as O_DIRECT wants
    try:
        out_fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
        try:
            _direct_io(out_fd, True)
            for offset, chunk in _pieces(in_fd, size, buffer):
                with chunk:
                    try:
                        _write_all_at(out_fd, chunk, offset)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        _direct_io(out_fd, False)  # a file system, or a tail, that O_DIRECT refuses
                        _write_all_at(out_fd, chunk, offset)
        finally:
            os.close(out_fd)
    finally:
        buffer.close()


def _pieces(fd: int, size: int, buffer: Any) -> Iterator[tuple[int, memoryview]]:
    """The first `size` bytes of the file `fd`, read into `buffer` a piece at a time: (offset, piece).

    Each piece is a view of `buffer`, valid until the next one is read. The file's position is left alone.
    """
    offset = 0
    with memoryview(buffer) as view:
        while offset < size:
            got = os.preadv(fd, [view[:min(len(view), size - offset)]], offset)
            if not got:
                raise BackupError(f"the database file ended after {offset} of {size} bytes")
            yield offset, view[:got]
            offset += got


def _direct_io(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    direct = getattr(os, "O_DIRECT", 0)
    with contextlib.suppress(OSError):  # EINVAL: this file system has no O_DIRECT
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | direct if on else flags & ~direct)


def _write_all_at(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def check_errors(path: Path, *, quick: bool = False) -> list[str]:
    """`PRAGMA integrity_check` (or quick_check) of a database file: an empty list when it is sound."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            return check_connection(conn, quick=quick)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]


def check_connection(conn: sqlite3.Connection, *, quick: bool = False) -> list[str]:
    """`PRAGMA integrity_check` (or quick_check) of what `conn` sees: an empty list when it is sound."""
    try:
        rows = conn.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    messages = [str(row[0]) for row in rows]
    return [] if messages == ["ok"] else messages


def project_migration_roots() -> dict[str, set[str]]:
    """For each of the project's own apps (not Django's or third parties'), its first migrations."""
    from django.db.migrations.loader import MigrationLoader

    ours = guards.project_apps()
    loader = MigrationLoader(None, ignore_no_migrations=True, load=False)
    loader.load_disk()
    roots: dict[str, set[str]] = {}
    for (app, name), migration in loader.disk_migrations.items():
        if app in ours and not any(dep[0] == app for dep in migration.dependencies):
            roots.setdefault(app, set()).add(name)
    return roots


def recorded_migrations(path: Path) -> set[tuple[str, str]] | None:
    """The (app, name) rows of django_migrations in the SQLite file at `path`; None without one."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'django_migrations'"
        if conn.execute(query).fetchone() is None:
            return None
        return set(conn.execute("SELECT app, name FROM django_migrations").fetchall())
    finally:
        conn.close()


def songsgen_errors(path: Path) -> list[str]:
    """Why the SQLite file at `path` is not a songsgen database this code runs (empty if it is)."""
    try:
        recorded = recorded_migrations(path)
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    if recorded is None:
        return ["it has no django_migrations table: not a Django database"]
    missing = [
        f"{app}.{name}" for app, names in sorted(project_migration_roots().items()) for name in sorted(names)
        if (app, name) not in recorded
    ]
    if missing:
        return [f"its django_migrations table lacks this project's migrations ({', '.join(missing)}): "
                "a backup of another Django project?"]
    if ahead := guards.history_gap(recorded).ahead:
        return [guards.newer_release(ahead)]
    return []


def row_counts(path: Path) -> dict[str, int]:
    """Rows per table of the database at `path`."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t.replace(chr(34), chr(34) * 2)}"').fetchone()[0]
                for t in tables}
    finally:
        conn.close()


def schema(path: Path) -> list[tuple[str, str, str]]:
    """The tables, indexes and triggers of the database at `path`, with their SQL."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    finally:
        conn.close()


def compress(fd: int, size: int, target: IO[bytes], *, level: int) -> None:
    """zstd-compress the first `size` bytes of the file `fd` into `target`, streaming, with a checksum.

    One buffer for the whole file: memory stays flat, whatever its size.
    """
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    writer = cctx.stream_writer(target, size=size, write_size=CHUNK, closefd=False)
    for _, piece in _pieces(fd, size, bytearray(4 * CHUNK)):
        with piece:
            writer.write(piece)
    writer.flush(zstandard.FLUSH_FRAME)


def unpack(stream: IO[bytes], target: Path) -> str:
    """Write the database in a backup stream (zstd, gzip or plain SQLite) to `target`; returns the format.

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
                with gzip.GzipFile(fileobj=rest, mode="rb") as gz:
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


def _journal_delete(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()


def page_size(path: Path) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def _readable(path: Path) -> None:
    """Raise BackupError unless `path` opens as an SQLite database; leave it in rollback-journal mode."""
    try:
        _journal_delete(path)  # a copy of a WAL database would otherwise grow a -wal file beside it
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"it is not a readable SQLite database ({exc})") from exc


def _sound(path: Path) -> None:
    """Raise BackupError unless `path` passes PRAGMA integrity_check."""
    if errors := check_errors(path):
        raise BackupError(f"it fails PRAGMA integrity_check: {'; '.join(errors[:5])}")


def _songsgen(path: Path) -> None:
    """Raise BackupError unless `path` is a songsgen database whose history is not ahead of ours."""
    if errors := songsgen_errors(path):
        raise BackupError(errors[0])


def check_candidate(path: Path) -> None:
    """Raise BackupError unless `path` is a sound songsgen database."""
    _readable(path)
    _sound(path)
    _songsgen(path)


@dataclass
class RestoreResult:
    """What a restore did."""

    database: Path
    tables: dict[str, int]
    checkpointed: bool
    seconds: float
    notes: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # migrations the code has and the backup lacks


def _need_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise BackupError(
            f"Not enough free disk in {folder}: {free // 2**20} MiB free, about {needed // 2**20} MiB needed "
            "(the unpacked backup, a safety copy of the live database, and SQLite's WAL). Free some space first."
        )


def copy_into_live(
    source: Path,
    live: Path,
    *,
    timeout: float,
    before_commit: Callable[[], None] | None = None,
    alongside: Callable[[], list[str]] = list,
    after_commit: Callable[[], None] = lambda: None,
) -> tuple[bool, list[str]]:
    """Replace the content of `live` with `source` in one transaction, and fold the WAL into the file.

    `before_commit` runs before the copy's last step, which commits: if it raises, the transaction is
    rolled back and nothing of the copy is ever visible. `alongside` (the check of the result) runs in a
    second thread from the commit on; meanwhile this thread runs `after_commit`, then a checkpoint that
    folds the WAL into the database file. Returns whether the WAL was folded in and truncated, and what
    `alongside` returned.
    """
    with contextlib.ExitStack() as stack:
        # Opened before this process connects to the file and closed after: closing a descriptor of it
        # drops every POSIX lock this process holds on it (https://sqlite.org/howtocorrupt.html, 2.2).
        stale = stack.enter_context(open(live, "rb")) if live.exists() else None
        dst = stack.enter_context(contextlib.closing(_connect(live, timeout)))
        # WAL: NORMAL, as the application runs; the commit does not wait for the disk. The checkpoint
        # syncs the WAL first, while the check of the result runs beside it, and the WAL is synced by
        # hand when a reader of an older state keeps that checkpoint from running to its end.
        # A rollback journal is power-safe only with FULL, and no checkpoint follows.
        wal_mode = dst.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        dst.execute(f"PRAGMA synchronous = {'NORMAL' if wal_mode else 'FULL'}")
        # Our own descriptor of the -wal (there now that the connection has read the database), which
        # SQLite does not lock: closing it is harmless.
        wal = stack.enter_context(_opened(Path(f"{live}-wal")))
        done = _copy_and_checkpoint(source, dst, stale, wal, before_commit, alongside, after_commit)
        replica.restored(dst)  # Litestream's own tables, when the copy removed them under a running replicate
        return done


def _copy_and_checkpoint(
    source: Path,
    dst: sqlite3.Connection,
    stale: IO[bytes] | None,
    wal: int | None,
    before_commit: Callable[[], None] | None,
    alongside: Callable[[], list[str]],
    after_commit: Callable[[], None],
) -> tuple[bool, list[str]]:
    committed = False
    try:
        # The disk is idle while the copy runs: write the WAL's pages out as they come, so the
        # checkpoint's fsync of the WAL after the commit has little left to write.
        with _flushing(wal):
            _backup_in_steps(source, dst, before_commit, stale)
            committed = True
    except BaseException as exc:
        if committed:  # the WAL could not be written out: the caller puts the safety copy back
            raise
        # Rolled back; the WAL may have grown by the uncommitted pages: give it back its usual size
        # unless a reader is in the middle of a transaction (best effort, a second at most).
        with contextlib.suppress(sqlite3.Error):
            dst.execute("PRAGMA busy_timeout = 1000")
            replica.checkpoint(dst, "TRUNCATE")
        if isinstance(exc, (sqlite3.Error, OSError)):
            raise BackupError(f"copying into the live database failed ({exc}); the copy was rolled back") from exc
        raise
    with ThreadPoolExecutor(max_workers=1) as pool:
        checked = pool.submit(alongside)  # reads the committed pages, from the WAL or the file
        after_commit()
        # Every page into the database file, which is fsynced (written out as the checkpoint goes,
        # through the descriptor held since before this connection). A reader of the newest state
        # does not hold this up; TRUNCATE waits for the check's read transaction to end.
        with _flushing(stale.fileno() if stale is not None else None):
            busy, frames, folded = replica.checkpoint(dst, "FULL")
        if (busy or frames != folded) and wal is not None:
            os.fsync(wal)  # the commit is durable before anything else happens
        result = checked.result()
    busy, _, _ = replica.checkpoint(dst, "TRUNCATE")
    return not busy, result


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int | None]:
    """A read-only descriptor of `path`, or None if there is no such file; closed afterwards."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flushing(fd: int | None, every: float = 0.2) -> Iterator[None]:
    """While the context lasts, a thread writes the dirty pages of the open file `fd` to disk every `every` s.

    An error writing them out is raised when the context ends.
    """
    if fd is None:
        yield
        return
    stop = threading.Event()
    failed: list[OSError] = []

    def flush() -> None:
        while not failed and not stop.wait(every):
            try:
                os.fdatasync(fd)
            except OSError as exc:  # reported once by the kernel: it must not get lost here
                failed.append(exc)

    thread = threading.Thread(target=flush, name="songsgen-flush", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if failed:
        raise failed[0]


def _backup_in_steps(
    source: Path, dst: sqlite3.Connection, before_commit: Callable[[], None] | None, stale: IO[bytes] | None
) -> None:
    """Copy the database `source` into `dst` with the backup API; `before_commit` runs before the last step.

    One write transaction on `dst` for the whole copy, whatever the number of steps (SQLite holds it
    from the first step to the last, which commits): readers of `dst` see the old database or the new
    one. Nothing writes `source`, so no step restarts. An exception raised between steps aborts the
    backup, and SQLite rolls the transaction back.

    Memory: every page SQLite writes into the WAL needs a page of memory, and on a virtual machine a page
    the system has not touched lately costs far more than one just freed. So after each step the same
    pages of `dst`'s own file (`stale`, a descriptor of it), which the checkpoint will rewrite, and,
    unless `before_commit` reads them beside the copy, the pages of `source` just copied are dropped from
    the page cache (POSIX_FADV_DONTNEED: clean pages only, a hint), handing their memory to the next step.
    """
    src = sqlite3.connect(source, isolation_level=None)
    try:
        size = int(src.execute("PRAGMA page_size").fetchone()[0])
        step = max(1, STEP // size)
        pending = before_commit
        drop_behind = before_commit is None  # a check reading the source beside the copy needs its pages
        if pending is not None and int(src.execute("PRAGMA page_count").fetchone()[0]) <= step:
            pending()  # the first step is the last
            pending = None
        with open(source, "rb") as pages:

            def between_steps(status: int, remaining: int, total: int) -> None:
                nonlocal pending
                copied = (total - remaining) * size
                if drop_behind:
                    _drop_cache(pages, copied)
                if stale is not None:
                    _drop_cache(stale, copied)
                if pending is not None and 0 < remaining <= step:  # the next step is the last
                    pending, run = None, pending
                    run()

            src.backup(dst, pages=step, progress=between_steps)
    finally:
        src.close()


def _drop_cache(file: IO[bytes], length: int) -> None:
    """Drop the clean pages of the first `length` bytes of `file` from the page cache."""
    with contextlib.suppress(OSError, AttributeError):  # a hint: no platform must honour it
        if length:  # (a length of 0 would mean the whole file)
            os.posix_fadvise(file.fileno(), 0, length, os.POSIX_FADV_DONTNEED)


def restore_sqlite(stream: IO[bytes], live: Path, *, timeout: float, log: Log = lambda _: None) -> RestoreResult:
    """Restore the backup in `stream` into the SQLite database at `live`; see the module docstring."""
    started = time.monotonic()
    folder = live.parent
    folder.mkdir(parents=True, exist_ok=True)
    safety: Path | None = None
    existed = live.exists()
    if existed and live.stat().st_size > 0:
        _need_space(folder, live.stat().st_size * 3)  # unpacked backup, safety copy, and the WAL
        safety = safetycopies.new_path(live)
        os.close(os.open(safety, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    keep_safety = False
    remove_stale_temp_files(folder)
    candidate = temp_path(folder, ".sqlite3")
    try:
        # The safety copy is taken while the backup is unpacked: it mostly waits on the disk.
        with ThreadPoolExecutor(max_workers=1) as pool:
            saved = pool.submit(safety_copy, live, safety, timeout=timeout) if safety else None
            unpack(stream, candidate)
            _readable(candidate)
            _songsgen(candidate)
            pending = guards.history_gap(recorded_migrations(candidate) or set()).behind
            log(f"Backup unpacked: {candidate.stat().st_size / 2**20:.1f} MiB, a songsgen database.")
            if saved is not None:
                try:
                    saved.result()
                except (sqlite3.Error, OSError) as exc:
                    raise BackupError(f"the safety copy of the live database failed ({exc})") from exc
                log(f"Safety copy of the live database: {safety}")
        _need_space(folder, candidate.stat().st_size)  # the WAL holds every page of the backup until the checkpoint
        if safety is not None and (theirs := page_size(candidate)) != (ours := page_size(live)):
            raise BackupError(
                f"the backup's page size ({theirs}) differs from the live database's ({ours}), which a "
                "WAL database cannot change; stop the application and replace the file"
            )
        checkpointed, errors, expected = _copy_and_verify(candidate, live, timeout=timeout)
        if errors and safety is not None:
            keep_safety = True
            try:
                copy_into_live(safety, live, timeout=timeout)
            except (BackupError, sqlite3.Error, OSError) as exc:
                raise RestoreUnverified(
                    f"the restored database failed its check ({'; '.join(errors[:5])}), and putting the safety "
                    f"copy back failed too ({exc}): stop the application and put {safety} in place of {live}"
                ) from exc
            raise RestoreUndone(
                f"the restored database failed its check ({'; '.join(errors[:5])}); the live database "
                f"was put back from the safety copy, which is kept at {safety}"
            )
        if errors:
            raise RestoreUnverified(
                f"the restored database at {live} fails its check ({'; '.join(errors[:5])}), and there was no "
                "database before it to put back"
            )
    except BaseException:
        if not existed and live.exists() and live.stat().st_size == 0:
            remove_file(live)  # the empty file SQLite created for a copy that was rolled back
        raise
    finally:
        remove_file(candidate)
        if safety is not None and not keep_safety:
            remove_file(safety)
    notes = [] if checkpointed else ["another connection kept the WAL busy; SQLite folds it in later"]
    if left := safetycopies.leftovers(live):
        notes.append(safetycopies.summary(left))
    try:
        set_wal(live, timeout)
    except sqlite3.Error as exc:  # the application's connections switch it themselves (songsgen/db/sqlite.py)
        notes.append(f"the restored database is not in WAL mode yet ({exc})")
    return RestoreResult(live, expected, checkpointed, time.monotonic() - started, notes, pending)


def _copy_and_verify(candidate: Path, live: Path, *, timeout: float) -> tuple[bool, list[str], dict[str, int]]:
    """Check `candidate` while copying it into `live`, committed only if it passes integrity_check.

    Returns whether the WAL was folded in, what is wrong with the result, and the backup's row counts.
    A backup that fails its integrity_check, or a copy that fails before it commits, raises BackupError:
    the copy was rolled back, the live database is as it was.
    """
    wanted = schema(candidate)
    counts: dict[str, int] = {}

    def check_backup() -> None:
        _sound(candidate)
        counts.update(row_counts(candidate))

    def verify() -> list[str]:
        # quick_check, not integrity_check: SQLite copied the pages of a file that has just passed
        # integrity_check; what a copy can damage, page structure, quick_check sees in a third of the
        # time (docs/backups.md, "Restore"). Row counts cannot be compared: other processes may
        # already be writing into the restored database. The schema can.
        errors = check_errors(live, quick=True)
        if not errors and schema(live) != wanted:
            errors = ["its schema differs from the backup's"]
        return errors

    with ThreadPoolExecutor(max_workers=1) as pool:
        # integrity_check of the backup runs beside the copy; the copy's last step, which commits,
        # waits for it and is rolled back if the backup fails it.
        checked = pool.submit(check_backup)
        try:
            checkpointed, errors = copy_into_live(
                candidate, live, timeout=timeout, before_commit=checked.result, alongside=verify,
                # Its pages are in the live database now; the memory they held takes the checkpoint's.
                after_commit=lambda: remove_file(candidate),
            )
        except (sqlite3.Error, OSError) as exc:  # after the commit: what failed before it raised BackupError
            return False, [str(exc)], counts
    return checkpointed, errors, counts


def set_wal(live: Path, timeout: float) -> None:
    # A database restored onto a missing file starts in rollback-journal mode; the project runs WAL.
    conn = _connect(live, timeout)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


# --- checking a backup ----------------------------------------------------------------------------


@dataclass
class BackupReport:
    """What `backupcheck` found in one backup."""

    name: str
    size: int  # bytes, as stored
    database_size: int  # bytes, unpacked
    created: datetime | None
    age_seconds: float | None
    format: str
    tables: dict[str, int]
    ok: bool
    errors: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "ok": self.ok, "errors": self.errors, "size": self.size,
            "database_size": self.database_size, "format": self.format,
            "created": self.created.isoformat() if self.created else None, "age_seconds": self.age_seconds,
            "tables": self.tables,
        }


def check_backup(stream: IO[bytes], name: str, size: int, folder: Path, created: datetime | None) -> BackupReport:
    """Unpack a backup into a temporary file in `folder`, check it, and count its rows."""
    remove_stale_temp_files(folder)
    candidate = temp_path(folder, ".sqlite3")
    age = (datetime.now(UTC) - created).total_seconds() if created else None
    fmt, tables, errors, db_size = "", {}, [], 0
    try:
        fmt = unpack(stream, candidate)
        db_size = candidate.stat().st_size
        check_candidate(candidate)
        tables = row_counts(candidate)
    except BackupError as exc:
        errors = [str(exc)]
    finally:
        remove_file(candidate)
    return BackupReport(name, size, db_size, created, age, fmt, tables, not errors, errors)


# --- django-dbbackup connectors -------------------------------------------------------------------


class _NamingMixin:
    """Filenames with the database's own name and the UTC time, never an existing file's name."""

    extension: str
    connection: Any

    def generate_filename(self, server_name: str | None = None) -> str:
        from dbbackup.storage import get_storage

        listed = set(get_storage().list_directory())
        label = database_label(self.connection.settings_dict)
        while True:
            name = backup_filename(self.extension, label, server_name)
            if not any(n.startswith(name) for n in listed):
                return name
            time.sleep(0.2)  # two backups within one second: wait for the next second's name
            listed = set(get_storage().list_directory())


class SqliteBackupConnector(_NamingMixin, BaseDBConnector):
    """A consistent online snapshot through SQLite's backup API, zstd-compressed, never held in memory."""

    extension = SQLITE_EXTENSION

    @property
    def work_dir(self) -> Path:
        return Path(settings.BACKUP_DIR)

    def create_dump(self) -> IO[bytes]:
        import tempfile

        live = sqlite_path(self.connection.settings_dict)
        if not live.exists():
            raise BackupError(f"There is no database at {live} to back up.")
        # No connection of this process may close a descriptor of the file while it is read (frozen_file).
        self.connection.close()
        timeout = float(settings.SQLITE_BUSY_TIMEOUT_MS) / 1000
        folder = self.work_dir
        remove_stale_temp_files(folder)
        private_dir(folder)
        # Compressed straight into a temporary file in the backup folder, which the storage then names
        # without copying; it is unlinked when closed, and after a SIGKILL by the next backup.
        packed = tempfile.NamedTemporaryFile(dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".zst")
        try:
            errors = self._pack(live, packed, timeout=timeout)
            if errors:
                raise BackupError(
                    f"The snapshot of {live} fails PRAGMA quick_check ({'; '.join(errors[:5])}): the live "
                    "database itself may be damaged. No backup was written."
                )
        except BaseException:
            packed.close()
            raise
        packed.flush()
        packed.seek(0)
        return packed

    def _pack(self, live: Path, packed: IO[bytes], *, timeout: float) -> list[str]:
        """Compress a consistent snapshot of `live` into `packed`; return what quick_check found wrong with it.

        Straight from the database file while frozen_file() holds it still, quick_check of that same
        state running beside the compression; else (a reader pins the WAL) from a backup-API copy.
        """
        level = int(settings.BACKUP_ZSTD_LEVEL)
        with frozen_file(live, timeout=timeout) as frozen:
            if frozen is not None:
                with ThreadPoolExecutor(max_workers=1) as pool:
                    checked = pool.submit(check_connection, frozen.reader, quick=True)
                    compress(frozen.fd, frozen.size, packed, level=level)
                    return checked.result()
        copy = temp_path(self.work_dir, ".sqlite3")
        try:
            snapshot(live, copy, timeout=timeout)
            with open(copy, "rb") as source, ThreadPoolExecutor(max_workers=1) as pool:
                checked = pool.submit(check_errors, copy, quick=True)
                compress(source.fileno(), copy.stat().st_size, packed, level=level)
                return checked.result()
        finally:
            remove_file(copy)

    def restore_dump(self, dump: IO[bytes]) -> RestoreResult:
        live = sqlite_path(self.connection.settings_dict)
        self.connection.close()
        self.result = restore_sqlite(dump, live, timeout=float(settings.SQLITE_BUSY_TIMEOUT_MS) / 1000,
                                     log=logger.info)
        self.pending = self.result.pending
        return self.result


class PostgresDumpConnector(_NamingMixin, PgDumpBinaryConnector):
    """django-dbbackup's pg_dump (custom format) connector, with our filenames and our restore.

    The restore is checked first (a readable archive of a songsgen database), then applied as one
    transaction that also drops what the archive does not hold (songsgen/db/pgdump.py): other sessions see
    the old database or the restored one, and a failure leaves the old one. django-dbbackup's own
    `pg_restore --clean` would leave tables created since the backup behind.
    """

    def _restore_dump(self, dump: IO[bytes]) -> tuple[str, str]:
        folder = Path(settings.BACKUP_DIR)
        archive = temp_path(folder, ".pgdump")
        try:
            with open(archive, "wb") as out:
                shutil.copyfileobj(dump, out, 1 << 20)
            pgdump.check_songsgen_archive(self.settings, archive)
            gap = guards.history_gap(pgdump.recorded_migrations(self.settings, archive))
            if gap.ahead:
                raise BackupError(guards.newer_release(gap.ahead))
            pgdump.restore(self.settings, archive)
            self.pending = gap.behind
        except pgdump.PgDumpError as exc:
            raise BackupError(str(exc)) from exc
        finally:
            remove_file(archive)
        return "", ""
