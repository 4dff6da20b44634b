"""Who holds the lock a PostgreSQL session waits for, and how long to wait before trying again."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

QUERY_CHARS = 200

_BLOCKERS = """
SELECT b.pid, COALESCE(a.application_name, ''),
       COALESCE(a.state, CASE WHEN b.pid = 0 THEN 'prepared transaction' ELSE 'gone' END),
       a.query_start, COALESCE(a.query, ''), EXTRACT(EPOCH FROM clock_timestamp() - w.since)::float8
FROM unnest(pg_blocking_pids(%s)) WITH ORDINALITY AS b(pid, n)
LEFT JOIN pg_stat_activity a ON a.pid = b.pid
CROSS JOIN ({since}) AS w(since)
ORDER BY b.n
"""
# pg_locks.waitstart (PostgreSQL 14+) is when the wait began; before 14 the waiter's query start is
# the best bound.
_SINCE_14 = "SELECT min(waitstart) FROM pg_locks WHERE pid = %s AND NOT granted"
_SINCE_OLD = "SELECT query_start FROM pg_stat_activity WHERE pid = %s"


class _Connection(Protocol):
    """A Django or a psycopg connection: both give %s-style cursors that are context managers."""

    def cursor(self) -> Any: ...


@dataclass(frozen=True)
class Blocker:
    """A backend in a waiting session's way: enough to name it in a retry message or kill it."""

    pid: int
    application_name: str
    state: str  # pg_stat_activity.state: "idle in transaction" is the usual culprit
    query_start: str | None  # ISO 8601, of its current or last query
    query: str  # its current or last query, cut to QUERY_CHARS
    wait_seconds: float | None  # how long the waiting session has waited so far


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= QUERY_CHARS else text[: QUERY_CHARS - 1] + "…"


def blockers_of(connection: _Connection, pid: int) -> list[Blocker]:
    """Who blocks backend `pid`, asked on `connection` (a monitoring session, not the waiter)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version_num')::int")
        since = _SINCE_14 if cursor.fetchone()[0] >= 140000 else _SINCE_OLD
        cursor.execute(_BLOCKERS.format(since=since), [pid, pid])
        rows = cursor.fetchall()
    return [
        Blocker(int(row[0]), str(row[1]), str(row[2]), _iso(row[3]), _cut(str(row[4])),
                round(row[5], 3) if row[5] is not None else None)
        for row in rows
    ]


def backend_pid(connection: BaseDatabaseWrapper) -> int:
    """The server pid of a Django PostgreSQL connection, read client-side: works mid-query."""
    connection.ensure_connection()
    return int(connection.connection.info.backend_pid)


def blockers(connection: BaseDatabaseWrapper) -> list[Blocker]:
    """Who blocks `connection` (Django, PostgreSQL, maybe waiting in another thread) right now."""
    pid = backend_pid(connection)
    monitor = connection.copy()  # same settings, its own session: the waiting one cannot answer
    try:
        return blockers_of(monitor, pid)
    finally:
        monitor.close()


def describe(found: Sequence[Blocker]) -> str:
    """One line per blocker, for a log line or an error message."""
    return "\n".join(
        f"pid {b.pid} (app {b.application_name!r}, {b.state} since {b.query_start or 'unknown'}): {b.query}"
        for b in found
    )


def backoff_delays(retries: int, base: float = 0.5, cap: float = 10.0) -> list[float]:
    """Seconds before each retry: exponential, full jitter, so retrying migrates don't line up."""
    if retries < 0 or base < 0 or cap < 0:
        raise ValueError("retries, base and cap must not be negative")
    return [random.uniform(0, min(cap, base * 2 ** min(attempt, 62))) for attempt in range(retries)]


class BlockerWatch:
    """Who blocks a Django connection while it works in this thread, sampled by a thread of its own.

    A lock timeout ends the wait, and with it the evidence: the blockers are named
    while the wait lasts."""

    def __init__(self, connection: BaseDatabaseWrapper, every: float = 0.2) -> None:
        import threading

        self.connection, self.every = connection, every
        self.last: list[Blocker] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blocker-watch", daemon=True)

    def __enter__(self) -> BlockerWatch:
        self._pid = backend_pid(self.connection)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # made in this thread: Django connections stay in their thread
        monitor = self.connection.copy()
        try:
            while not self._stop.wait(self.every):
                found = blockers_of(monitor, self._pid)
                if found:
                    self.last = found
        except Exception:  # noqa: BLE001
            # the watch only adds words to a message; it never fails the migrate
            pass
        finally:
            monitor.close()

    def describe(self) -> str:
        return f"blocked by {describe(self.last)}" if self.last else ""


# An autovacuum in a DDL's way is cancelled only after the waiting session's deadlock_timeout (1 s
# by default): a table lock queued that long makes every writer behind it wait as long. Measured:
# an ALTER TABLE blocked by autovacuum waited 1.002 s with the default, 0.103 s with 100 ms, 0.023
# s with this (PostgreSQL 15, three tries each). The deadlock check it brings forward runs once per
# wait of this one session: nothing to save.
AUTOVACUUM_YIELD = "20ms"


def may_set(connection: _Connection, parameter: str) -> bool:
    """Whether this role may SET a superuser-only parameter (superuser, or GRANT SET on 15+)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('is_superuser') = 'on', current_setting('server_version_num')::int")
        superuser, version = cursor.fetchone()
        if superuser or version < 150000:
            return bool(superuser)
        cursor.execute("SELECT has_parameter_privilege(%s, 'SET')", [parameter])
        return bool(cursor.fetchone()[0])


def hurry_autovacuum(connection: _Connection) -> bool:
    """Have an autovacuum blocking this session's DDL cancelled after 20 ms; whether set."""
    if not may_set(connection, "deadlock_timeout"):
        return False
    with connection.cursor() as cursor:
        cursor.execute(f"SET deadlock_timeout = '{AUTOVACUUM_YIELD}'")
    return True


def limit_waits(connection: BaseDatabaseWrapper) -> None:
    """The migrate session's lock and statement timeouts, and its autovacuum hurry.

    Session-wide, so they cover every statement of every operation: RunSQL
    and RunPython included."""
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = %s", [f"{int(settings.MIGRATE_LOCK_TIMEOUT_MS)}ms"])
        cursor.execute("SET statement_timeout = %s", [f"{int(settings.MIGRATE_STATEMENT_TIMEOUT_MS)}ms"])
    hurry_autovacuum(connection)


def unlimit_waits(connection: BaseDatabaseWrapper) -> None:
    """The session's defaults back, unless its transaction is broken (then it is closed anyway)."""
    if connection.vendor != "postgresql" or connection.connection is None or connection.needs_rollback:
        return
    with connection.cursor() as cursor:
        cursor.execute("RESET lock_timeout")
        cursor.execute("RESET statement_timeout")
        if may_set(connection, "deadlock_timeout"):
            cursor.execute("RESET deadlock_timeout")

