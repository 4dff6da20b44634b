"""One schema-changing command at a time per database: migrate, dbrestore, transferdb share it.

The OS or the server releases it when the process dies, so a crash never leaves it behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from songsgen.db import pgconn
from songsgen.db.exceptions import DatabaseBusy

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

# "songsgen" in ASCII: the advisory-lock key every songsgen process agrees on (per database).
PG_LOCK_KEY = 0x736F6E677367656E
APPLICATION_PREFIX = "songsgen-lock"


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as far as it can be told."""

    pid: int | None
    started: str
    purpose: str

    def describe(self) -> str:
        return f"another {self.purpose} (pid {self.pid if self.pid is not None else '?'}, started at {self.started})"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lock_path(settings_dict: dict[str, Any]) -> Path:
    """The lock file beside an SQLite database."""
    name = Path(str(settings_dict["NAME"]))
    return name.with_name(name.name + ".migrate-lock")


def _is_sqlite(settings_dict: dict[str, Any]) -> bool:
    return str(settings_dict.get("ENGINE", "")).endswith("sqlite3")


def _refusal(holder: Holder, waited: float) -> DatabaseBusy:
    after = f" after waiting {waited:.0f} s" if waited >= 1 else ""
    return DatabaseBusy(
        f"{holder.describe()} holds the database{after}. Nothing was changed. Wait for it to finish, "
        "or give --lock-wait SECONDS to wait for it."
    )


def flock_within(fd: int, wait: float) -> bool:
    """An exclusive flock on `fd`, retried every 0.1 s for `wait` s; False if another holds it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


@contextmanager
def _sqlite_lock(settings_dict: dict[str, Any], purpose: str, wait: float) -> Iterator[None]:
    path = lock_path(settings_dict)
    path.parent.mkdir(parents=True, exist_ok=True)  # the data folder is created when first needed
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not flock_within(fd, wait):
            raise _refusal(_read_holder(fd), wait)
        # The file is never removed: unlinking a flocked file lets a third process lock a new one.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": _now(), "purpose": purpose}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _read_holder(fd: int) -> Holder:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        data = {}
    return Holder(data.get("pid"), data.get("started", "unknown"), data.get("purpose", "migrate"))


def _pg_connect(settings_dict: dict[str, Any], application_name: str) -> psycopg.Connection[TupleRow]:
    import psycopg

    params = {"connect_timeout": 10, **pgconn.connect_params(settings_dict)}
    return psycopg.connect(autocommit=True, application_name=application_name, **params)


def _pg_holder(conn: psycopg.Connection[TupleRow]) -> Holder:
    row = conn.execute(
        "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
        [(PG_LOCK_KEY >> 32) & 0xFFFFFFFF, PG_LOCK_KEY & 0xFFFFFFFF],
    ).fetchone()
    if row is None:
        return Holder(None, "unknown", "command")
    # "songsgen-lock PID STARTED PURPOSE": application_name keeps 63 bytes, so no key=value padding.
    words = str(row[0]).split()
    if len(words) == 4 and words[0] == APPLICATION_PREFIX and words[1].isdigit():
        return Holder(int(words[1]), words[2], words[3])
    return Holder(None, row[1].strftime("%Y-%m-%dT%H:%M:%SZ"), "command")


def _pg_try_lock(conn: psycopg.Connection[TupleRow]) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", [PG_LOCK_KEY]).fetchone()
    return row is not None and bool(row[0])


@contextmanager
def _pg_lock(settings_dict: dict[str, Any], purpose: str, wait: float) -> Iterator[None]:
    name = f"{APPLICATION_PREFIX} {os.getpid()} {_now()} {purpose}"
    conn = _pg_connect(settings_dict, name)
    try:
        deadline = time.monotonic() + wait
        while not _pg_try_lock(conn):
            if time.monotonic() >= deadline:
                raise _refusal(_pg_holder(conn), wait)
            time.sleep(0.1)
        yield
    finally:
        conn.close()  # ends the session, which releases the lock


@contextmanager
def database_lock(settings_dict: dict[str, Any], *, purpose: str = "migrate", wait: float = 0) -> Iterator[None]:
    """Hold the database's schema lock for the block; DatabaseBusy if held past `wait`."""
    if _is_sqlite(settings_dict):
        with _sqlite_lock(settings_dict, purpose, wait):
            yield
    else:
        with _pg_lock(settings_dict, purpose, wait):
            yield
