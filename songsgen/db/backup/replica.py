"""Continuous replication's state: its settings, whether `replicate` runs, our checkpoint mode.

Imports nothing of the backup machinery: `songsgen.db.backup` asks it for checkpoint modes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import socket
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from django.conf import settings

from songsgen.db.dblock import flock_within
from songsgen.db.exceptions import ReplicaBusy, ReplicaError

LOCK_SUFFIX = ".replicate-lock"
SOCKET_SUFFIX = ".replicate.sock"
CONFIG_SUFFIX = ".replicate.yml"
LOG_SUFFIX = ".replicate.log"
LOCK_WAIT = 2.0  # seconds `replicate` retries the lock: a process testing it holds it for a moment
STATUS_TIMEOUT = 1.0  # seconds replication_status() waits for Litestream's answer
SOCKET_PATH_MAX = 100  # bytes; a Unix socket's path must fit in 108
# Replica URL schemes Litestream 0.5 knows
# (https://litestream.io/reference/config/#replica-settings).
SCHEMES = {"file", "s3", "gs", "abs", "sftp", "webdav", "webdavs", "nats", "oss"}
BLOCKING_CHECKPOINTS = {"FULL", "RESTART", "TRUNCATE"}


@dataclass(frozen=True)
class Replication:
    """What `replicate` runs and a restore reads: the database, its replica, Litestream's files."""

    database: Path
    url: str
    sync_interval: float  # seconds, Litestream's monitor-interval and sync-interval

    @property
    def folder(self) -> Path | None:
        """The replica's folder when it is a file replica, else None."""
        parts = urlsplit(self.url)
        return Path(unquote(parts.path)) if parts.scheme == "file" else None

    @property
    def shown_url(self) -> str:
        """The URL as messages show it: no user, password or query string."""
        return shown_url(self.url)

    @property
    def lock(self) -> Path:
        return lock_path(self.database)

    @property
    def config(self) -> Path:
        return self.database.with_name(self.database.name + CONFIG_SUFFIX)

    @property
    def socket(self) -> Path:
        return socket_path(self.database)

    @property
    def log(self) -> Path:
        """Litestream's own log, beside its configuration: its INFO lines would drown the server's."""
        return self.database.with_name(self.database.name + LOG_SUFFIX)


def database_file(settings_dict: dict[str, Any]) -> Path:
    """The SQLite file of a database; ReplicaError for PostgreSQL or an in-memory database."""
    if not str(settings_dict.get("ENGINE", "")).endswith("sqlite3"):
        raise ReplicaError(
            "replication streams an SQLite database's WAL with Litestream; this database is PostgreSQL, whose "
            "own WAL archiving or streaming replication does that (docs/backups.md)."
        )
    name = str(settings_dict["NAME"])
    if not name or name == ":memory:" or "mode=memory" in name:
        raise ReplicaError(f"database {name!r} lives in memory; there is no file to replicate.")
    return Path(name.removeprefix("file:").split("?")[0]).resolve()


def shown_url(url: str) -> str:
    """A replica URL without its credentials or query string, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def asked_for() -> bool:
    """Whether replication was asked for (SONGSGEN_REPLICA_URL set): the one place deciding it."""
    return bool(str(getattr(settings, "REPLICA_URL", "") or "").strip())


def replica_url(database: Path) -> str:
    """SONGSGEN_REPLICA_URL, a bare path read as a file replica; unset:
    `<data folder>/replica/<database file>`."""
    url = str(getattr(settings, "REPLICA_URL", "") or "").strip()
    if not url:
        return (Path(settings.DATA_DIR) / "replica" / database.name).resolve().as_uri()
    if "://" not in url:
        path = Path(url)
        if not path.is_absolute():
            raise ReplicaError(f"SONGSGEN_REPLICA_URL {url!r} is a relative path: give an absolute path or a URL "
                               "such as file:///srv/replica or s3://bucket/songs.db.")
        return path.as_uri()
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ReplicaError(f"SONGSGEN_REPLICA_URL has the scheme {scheme + '://'!r}, which Litestream does not "
                           f"know; use one of {', '.join(sorted(s + '://' for s in SCHEMES))}.")
    return url


def replication(settings_dict: dict[str, Any]) -> Replication:
    """The replication of a database as the settings describe it; ReplicaError if impossible."""
    database = database_file(settings_dict)
    return Replication(database, replica_url(database), float(settings.REPLICA_SYNC_INTERVAL))


# --- the lock: whether `replicate` runs
# ------------------------------------------------------------


def lock_path(database: Path) -> Path:
    """The lock file `replicate` holds beside the database."""
    return database.with_name(database.name + LOCK_SUFFIX)


def is_replicating(database: Path) -> bool:
    """Whether a `replicate` process holds the database's lock now."""
    try:
        fd = os.open(lock_path(database), os.O_RDONLY)
    except (FileNotFoundError, PermissionError):
        # never started here, or another user's: not ours to tell
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the shared lock we may have taken
    return False


def holder(database: Path) -> dict[str, Any]:
    """What the running `replicate` wrote in its lock file (pid, start time, replica); {} if not."""
    try:
        return dict(json.loads(lock_path(database).read_text() or "{}"))
    except (OSError, ValueError, TypeError):
        return {}


def take_lock(rep: Replication) -> int:
    """Lock the database for `replicate`; returns the descriptor, holding the lock until closed."""
    fd = os.open(rep.lock, os.O_RDWR | os.O_CREAT, 0o600)
    if not flock_within(fd, LOCK_WAIT):
        os.close(fd)
        who = holder(rep.database)
        raise ReplicaBusy(
            f"another replicate (pid {who.get('pid', '?')}, started at {who.get('started', '?')}) is already "
            f"replicating {rep.database}; stop it first (one Litestream per database)."
        )
    # Never removed: unlinking a locked file lets a second process lock a new one.
    os.ftruncate(fd, 0)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": started, "replica": rep.shown_url}).encode(), 0)
    return fd


# --- our checkpoints
# -------------------------------------------------------------------------------


def _main_file(conn: sqlite3.Connection) -> Path | None:
    for _seq, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return Path(file) if file else None
    return None


def checkpoint_mode(where: Path | sqlite3.Connection, wanted: str) -> str:
    """The checkpoint to run on the database at `where` (path or connection) instead of `wanted`.

    `wanted` itself, unless it would block writers while `replicate` runs: then PASSIVE.
    """
    wanted = wanted.upper()
    if wanted not in BLOCKING_CHECKPOINTS:
        return wanted
    path = _main_file(where) if isinstance(where, sqlite3.Connection) else Path(where)
    if path is not None and is_replicating(path.resolve()):
        return "PASSIVE"
    return wanted


def checkpoint(conn: sqlite3.Connection, wanted: str) -> tuple[int, int, int]:
    """`PRAGMA wal_checkpoint` in the mode checkpoint_mode() allows; (busy, frames, folded)."""
    busy, frames, folded = conn.execute(f"PRAGMA wal_checkpoint({checkpoint_mode(conn, wanted)})").fetchone()
    return int(busy), int(frames), int(folded)


def restored(conn: sqlite3.Connection) -> None:
    """After a restore into the live database: Litestream's two tables back if the copy lost them.

    A backup made before replication started lacks them; while `replicate` runs, Litestream needs
    them for every checkpoint and read lock it takes, and would otherwise stop replicating, backing
    off, until restarted. Its own statements, so it finds them as it made them.
    """
    path = _main_file(conn)
    if path is None or not is_replicating(path.resolve()):
        return
    # Never a reason to undo a verified restore: if this fails, Litestream says so in its log, and
    # its lag grows.
    with contextlib.suppress(sqlite3.Error):
        _add_litestream_tables(conn)


def _add_litestream_tables(conn: sqlite3.Connection) -> None:
    have = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('_litestream_seq', '_litestream_lock')")}
    if "_litestream_seq" not in have:
        conn.execute("CREATE TABLE IF NOT EXISTS _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER);")
    if "_litestream_lock" not in have:
        conn.execute("CREATE TABLE IF NOT EXISTS _litestream_lock (id INTEGER);")


def prepare_restore(candidate: Path, live: Path) -> None:
    """Before a restore into a replicated database: Litestream's tables added to the copy to restore (our own
    temporary file), so they are in the very transaction that replaces the content, with no moment without
    them for Litestream's next checkpoint to fail on (a backup made before replication lacks them)."""
    if not is_replicating(live.resolve()):
        return
    conn = sqlite3.connect(candidate, isolation_level=None)
    try:
        _add_litestream_tables(conn)
    finally:
        conn.close()


# --- Litestream's control socket: lag
# ---------------------------------------------------------------


def socket_path(database: Path) -> Path:
    """Where Litestream's control socket listens: beside the database, or a private folder."""
    beside = database.with_name(database.name + SOCKET_SUFFIX)
    if len(os.fsencode(beside)) <= SOCKET_PATH_MAX:
        return beside
    digest = hashlib.sha256(os.fsencode(database)).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"songsgen-{os.getuid()}" / f"{digest}.sock"


def private_socket_folder(path: Path) -> None:
    """Create the socket's folder owner-only if missing; refuse one others could write into."""
    folder = path.parent
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ReplicaError(f"{folder} is not a folder of this user's alone; remove it (it holds Litestream's "
                           "control socket) and start replicate again.")


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: how Litestream's control socket answers."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


def control(database: Path, endpoint: str) -> dict[str, Any] | None:
    """GET `endpoint` from the running Litestream's control socket; None when it does not answer."""
    conn = _UnixConnection(socket_path(database), STATUS_TIMEOUT)
    try:
        conn.request("GET", endpoint)
        response = conn.getresponse()
        if response.status != 200:
            return None
        return dict(json.loads(response.read()))
    except (OSError, ValueError, TypeError, http.client.HTTPException):
        # not listening (yet), or not Litestream
        return None
    finally:
        conn.close()


class ReplicationStatus(NamedTuple):
    """Whether `replicate` runs, seconds since the replica was last confirmed current, and when."""

    running: bool
    lag_seconds: float | None
    last_sync: datetime | None


def replication_status(settings_dict: dict[str, Any]) -> ReplicationStatus:
    """Replication as monitoring sees it; (False, None, None) when it does not or cannot run.

    Litestream records a successful sync of the replica every sync interval, idle or not; the lag
    is the time since the last one, so a replica that stopped taking uploads shows a growing lag.
    """
    try:
        database = database_file(settings_dict)
    except ReplicaError:
        return ReplicationStatus(False, None, None)
    if not is_replicating(database):
        return ReplicationStatus(False, None, None)
    answer = control(database, "/list") or {}
    for entry in answer.get("databases") or []:
        if Path(str(entry.get("path", ""))).resolve() != database or not entry.get("last_sync_at"):
            continue
        with contextlib.suppress(ValueError):
            last = datetime.fromisoformat(str(entry["last_sync_at"])).astimezone(UTC)
            return ReplicationStatus(True, max(0.0, (datetime.now(UTC) - last).total_seconds()), last)
    return ReplicationStatus(True, None, None)
