"""The live SQLite file: held still, copied as of one instant, copied *into* in one transaction.

The package's only OS-level I/O; its one machine-specific tuning is `beside`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from songsgen.db.backup import replica
from songsgen.db.exceptions import BackupError
from songsgen.db.problems import Problem

CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough to keep memory flat
STEP = 64 * CHUNK  # bytes a restore copies into the live database per backup-API step
LOCK_WAIT = 2.0  # seconds frozen_file() waits for the write lock before it gives way

T = TypeVar("T")


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
    """Copy the live database `source` into `target` in one backup-API step: one instant."""
    src = _connect(source, timeout)
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            # The copy only has to be durable once compressed and stored, not page by page.
            dst.execute("PRAGMA journal_mode = OFF")
            dst.execute("PRAGMA synchronous = OFF")
            src.backup(dst, pages=-1)
            # A plain rollback-journal file: it opens anywhere, even read-only,
            # with no -wal beside it.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def set_wal(live: Path, timeout: float) -> None:
    """Put the database in WAL mode: one restored onto a missing file has a rollback journal."""
    conn = _connect(live, timeout)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


# --- holding the file still
# -------------------------------------------------------------------------


@dataclass(frozen=True)
class FrozenFile:
    """The live database file held still: a read transaction on it, a descriptor, its size."""

    reader: sqlite3.Connection
    fd: int
    size: int


@contextlib.contextmanager
def frozen_file(live: Path, *, timeout: float, lock_wait: float = LOCK_WAIT) -> Iterator[FrozenFile | None]:
    """The database file held still while the context lasts, as of one instant; or None.

    In WAL mode a read transaction begun when every committed frame is in the file reads the file
    alone, and no checkpoint may write into the file while it lasts. We checkpoint, then, holding
    the write lock for a few milliseconds, checkpoint what is left and begin that read. None when a
    reader of an older state keeps part of the WAL out of the file, a writer holds the lock longer
    than `lock_wait` seconds, or the database is not in WAL mode.

    The descriptor is opened before the connections and closed after them: closing any descriptor
    of the file drops every POSIX lock the process holds on it, SQLite's included
    (https://sqlite.org/howtocorrupt.html, 2.2). So the caller must not open and close descriptors
    of the file meanwhile. The reader may be used from another thread.
    """
    fd = os.open(live, os.O_RDONLY)
    try:
        reader = _connect(live, timeout, check_same_thread=False)
        try:
            # the bulk, without holding writers up
            reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not _begin_reading_the_file(reader, live, min(timeout, lock_wait)):
                yield None
            else:
                pages = reader.execute("PRAGMA page_count").fetchone()[0]
                size = int(pages) * int(reader.execute("PRAGMA page_size").fetchone()[0])
                yield FrozenFile(reader, fd, size)
        finally:
            reader.close()
    finally:
        os.close(fd)


def _begin_reading_the_file(reader: sqlite3.Connection, live: Path, lock_wait: float) -> bool:
    """Begin a read transaction on `reader` that reads the file alone; False where it can't."""
    lock = _connect(live, lock_wait)
    try:
        try:
            lock.execute("BEGIN IMMEDIATE")  # nothing commits between the checkpoint and the read
        except sqlite3.OperationalError:  # a long write transaction: the caller takes another way
            return False
        try:
            busy, frames, folded = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            # A frame is not in the file; or (-1, -1) not in WAL mode, where a reader would hold
            # every writer's commit off for the whole read: the backup API's read is shorter.
            if busy or frames != folded or frames < 0:
                return False
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return True
        finally:
            lock.execute("ROLLBACK")
    finally:
        lock.close()


def safety_copy(live: Path, target: Path, *, timeout: float,
                api_copy: Callable[..., None] = snapshot) -> None:
    """Copy the live database over the file `target` as of one instant, writers going on.

    From the file while frozen_file() holds it still; when it cannot, `api_copy` (the backup API)
    takes it.
    """
    with frozen_file(live, timeout=timeout) as frozen:
        if frozen is not None:
            out_fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
            try:
                copy_file(frozen.fd, out_fd, frozen.size)
            finally:
                os.close(out_fd)
            return
    api_copy(live, target, timeout=timeout)


def read_pieces(fd: int, size: int, buffer: Any) -> Iterator[tuple[int, memoryview]]:
    """The first `size` bytes of file `fd`, read into `buffer` a piece at a time: (offset, piece).

    Each piece is a view of `buffer`, valid until the next one is read. The file's position is left
    alone.
    """
    offset = 0
    with memoryview(buffer) as view:
        while offset < size:
            got = os.preadv(fd, [view[:min(len(view), size - offset)]], offset)
            if not got:
                raise BackupError(f"the database file ended after {offset} of {size} bytes")
            yield offset, view[:got]
            offset += got


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` to `fd`."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def copy_file(in_fd: int, out_fd: int, size: int) -> None:
    """Copy the first `size` bytes of `in_fd` into `out_fd`, a megabyte at a time (flat memory)."""
    for _, piece in read_pieces(in_fd, size, bytearray(CHUNK)):
        with piece:
            write_all(out_fd, piece)


# --- machine-specific tuning: one function each
# -----------------------------------------------------


@contextlib.contextmanager
def beside(piece: str, work: Callable[[], T]) -> Iterator[Future[T]]:
    """`work` in a second thread, as a Future joined when the context ends: a check
    reads on one core while the copy or compression runs on the other. `piece` names the
    step (threads:pack, …)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(work)


# --- copying into the live database
# -----------------------------------------------------------------


class Copied(NamedTuple):
    """What copy_into_live did: WAL folded in, the check's findings, how long writers waited."""

    folded: bool
    errors: list[Problem]
    lock_seconds: float  # the copy's write transaction, first step to commit


def copy_into_live(
    source: Path,
    live: Path,
    *,
    timeout: float,
    step: int = STEP,
    before_commit: Callable[[], None] | None = None,
    alongside: Callable[[], list[Problem]] = list,
    after_commit: Callable[[], None] = lambda: None,
) -> Copied:
    """Replace the content of `live` with `source` in one transaction; fold the WAL in after.

    `before_commit` runs before the copy's last step, which commits: if it raises, the transaction
    is rolled back and nothing of the copy is ever visible. `alongside` (the check of the result)
    runs in a second thread from the commit on; meanwhile this thread runs `after_commit`, then a
    checkpoint that folds the WAL into the database file. Returns whether the WAL was folded in and
    truncated, what `alongside` returned, and how long the copy held the write lock. `step`: bytes
    copied per backup-API step.
    """
    with contextlib.ExitStack() as stack:
        dst = stack.enter_context(contextlib.closing(_connect(live, timeout)))
        # WAL: NORMAL, as the application runs; the commit does not wait for the disk. The
        # checkpoint syncs the WAL first, while the check of the result runs beside it, and the WAL
        # is synced by hand when a reader of an older state keeps that checkpoint from running to
        # its end. A rollback journal is power-safe only with FULL, and no checkpoint follows.
        wal_mode = dst.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        dst.execute(f"PRAGMA synchronous = {'NORMAL' if wal_mode else 'FULL'}")
        # Our own descriptor of the -wal (there now that the connection has read the database),
        # which SQLite does not lock: closing it is harmless.
        wal = stack.enter_context(_opened(Path(f"{live}-wal")))
        began = time.monotonic()
        try:
            _backup_in_steps(source, dst, step, before_commit)
            held = time.monotonic() - began
        except BaseException as exc:
            # Rolled back; the WAL may have grown by the uncommitted pages: give it back
            # its usual size unless a reader is in the middle of a transaction (best
            # effort, a second at most).
            with contextlib.suppress(sqlite3.Error):
                dst.execute("PRAGMA busy_timeout = 1000")
                replica.checkpoint(dst, "TRUNCATE")
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise BackupError(f"copying into the live database failed ({exc}); the copy was rolled back") from exc
            raise
        folded, errors = _checkpoint(dst, wal, alongside, after_commit)
        # Litestream's own tables, when the copy removed them under a running replicate
        replica.restored(dst)
        return Copied(folded, errors, held)


def _checkpoint(dst: sqlite3.Connection, wal: int | None,
                alongside: Callable[[], list[Problem]], after_commit: Callable[[], None]) -> tuple[bool, list[Problem]]:
    """Fold the committed copy into the database file, durably, while `alongside` checks it."""
    # reads the committed pages, from the WAL or the file
    with beside("threads:verify", alongside) as checked:
        after_commit()
        # Every page into the database file, which is fsynced. A reader of the newest state does
        # not hold this up; TRUNCATE waits for the check's read transaction to end.
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


def _backup_in_steps(source: Path, dst: sqlite3.Connection, step: int,
                     before_commit: Callable[[], None] | None) -> None:
    """Copy database `source` into `dst` by the backup API; `before_commit` before the last step.

    One write transaction on `dst` for the whole copy, whatever the number of steps (SQLite holds
    it from the first step to the last, which commits): readers of `dst` see the old database or
    the new one. Nothing writes `source`, so no step restarts. An exception raised between steps
    aborts the backup, and SQLite rolls the transaction back.
    """
    src = sqlite3.connect(source, isolation_level=None)
    try:
        size = int(src.execute("PRAGMA page_size").fetchone()[0])
        pages_per_step = max(1, step // size)
        pending = before_commit
        if pending is not None and int(src.execute("PRAGMA page_count").fetchone()[0]) <= pages_per_step:
            pending()  # the first step is the last
            pending = None

        def between_steps(status: int, remaining: int, total: int) -> None:
            nonlocal pending
            if pending is not None and 0 < remaining <= pages_per_step:  # the next step is the last
                run, pending = pending, None
                run()

        src.backup(dst, pages=pages_per_step, progress=between_steps)
    finally:
        src.close()
