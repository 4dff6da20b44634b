"""Files that appear only when complete: temporary names beside the final one, the rename into place, removal.

Every temporary file is `.songsgen-tmp-<pid>-<random>` in the folder of its final name, so a rename
never crosses file systems and the next run removes what a process killed by SIGKILL left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

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
    """Delete temporary files left by processes that died (a SIGKILL cannot clean up after itself)."""
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
    """A temporary file beside `target` for the block to fill, renamed over `target` when the block ends.

    Readers see the old file or the whole new one, never half; if the block raises, the temporary file goes.
    `durable`: the file and the rename reach the disk before the block's caller goes on.
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
