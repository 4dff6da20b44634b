"""Files that appear only when complete: temporary names, the rename or link into place, removal.

Temporaries sit beside their final name, so a rename never crosses file systems.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from songsgen.db.backup import live

TEMP_PREFIX = ".songsgen-tmp-"  # every temporary file we make; see remove_stale_temp_files()


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
    """Delete temporary files left by dead processes (a SIGKILL cannot clean up after itself)."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(f"{TEMP_PREFIX}*"):
        match = re.match(rf"{re.escape(TEMP_PREFIX)}(\d+)-", path.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replaced_when_complete(target: Path, *, suffix: str = "", mode: int = 0o600,
                           durable: bool = True) -> Iterator[Path]:
    """A temporary file beside `target` for the block to fill, renamed over it at the end.

    Readers see the old file or the whole new one, never half; if the block raises, the temporary
    file goes. `durable`: the file and the rename reach the disk before the block's caller goes on.
    """
    tmp = temp_path(target.parent, suffix)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        remove_file(tmp)
        raise
    if durable:
        fsync_dir(target.parent)


def atomic_write(source: IO[bytes], target: Path, *, mode: int = 0o600) -> None:
    """Write `source` to `target` under a temporary name, fsync, link it into place when done.

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
        fsync_dir(target.parent)
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
    fsync_dir(target.parent)


def _copy_into(source: IO[bytes], fd: int) -> None:
    """Copy `source` from its start into the open file descriptor `fd`."""
    try:
        in_fd = source.fileno()
        info = os.fstat(in_fd)
    except (AttributeError, OSError, ValueError):
        in_fd = None
    if in_fd is not None and stat.S_ISREG(info.st_mode):
        live.copy_file(in_fd, fd, info.st_size)
        return
    with contextlib.suppress(AttributeError, OSError, ValueError):
        source.seek(0)  # a pipe cannot seek, and is read from where it stands
    while chunk := source.read(live.CHUNK):
        live.write_all(fd, chunk)


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
