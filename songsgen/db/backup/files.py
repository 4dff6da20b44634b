"""Backups written whole: a complete file linked into place, never over another backup."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import IO, Any

from songsgen.db.atomicfile import TEMP_PREFIX, fsync_dir, temp_path
from songsgen.db.backup import live


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
