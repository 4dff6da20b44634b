"""The migrate's wait for replicas: after each commit, until every replica has replayed it (bounded)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from songsgen.db import diagnose
from songsgen.db.replicas.context import format_lsn, parse_lsn
from songsgen.db.replicas.health import aliases

POLL_SECONDS = 0.05
SAY_WAITING_AFTER = 1.0  # a replay this slow is named before the wait goes on (it can last the whole bound)


def _replayed(alias: str, lsn: int) -> bool:
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [format_lsn(lsn)])
        row = cursor.fetchone()
    return bool(row and row[0])


@dataclass
class ReplayWait:
    """Called with the migrations each commit made durable; waits for each replica, records how long it took."""

    connection: BaseDatabaseWrapper
    log: Callable[[str], None]
    bound: float = field(default_factory=lambda: float(settings.MIGRATE_REPLICA_WAIT_SECONDS))
    entries: list[dict[str, Any]] = field(default_factory=list)
    _given_up: set[str] = field(default_factory=set)

    def __call__(self, migrations: list[str]) -> None:
        if self.connection.vendor != "postgresql" or not migrations or not aliases():
            return
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            row = cursor.fetchone()
        lsn = parse_lsn(row[0] if row else None)
        for alias in aliases():
            self.entries.append(self._wait(alias, migrations, lsn))

    def _wait(self, alias: str, migrations: list[str], lsn: int) -> dict[str, Any]:
        names = ", ".join(migrations)
        entry: dict[str, Any] = {"replica": alias, "migrations": migrations, "lsn": format_lsn(lsn)}
        if alias in self._given_up:
            entry.update(replayed=False, seconds=0.0, problem="not waited for: it missed an earlier bound")
            return entry
        started, problem, said = time.monotonic(), "", False
        while True:
            try:
                if _replayed(alias, lsn):
                    seconds = time.monotonic() - started
                    entry.update(replayed=True, seconds=round(seconds, 3))
                    self.log(f"Replica {alias}: replayed {names} {seconds:.2f} s after it committed.")
                    return entry
            except DatabaseError as exc:
                connections[alias].close()
                problem = diagnose.explain(exc) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            waited = time.monotonic() - started
            if waited >= self.bound:
                break
            if waited >= SAY_WAITING_AFTER and not said:
                said = True  # the migration is committed: the operator must not take the wait for a hang
                self.log(f"Waiting up to {self.bound:g} s for {alias} to replay {names} (committed on the "
                         "primary) …")
            time.sleep(POLL_SECONDS)
        self._given_up.add(alias)
        why = f" ({problem})" if problem else ""
        entry.update(replayed=False, seconds=round(time.monotonic() - started, 3), problem=problem or "behind")
        self.log(f"Replica {alias}: had not replayed {names} after {self.bound:g} s{why}; going on. Readers skip it "
                 "while it is down or behind (docs/postgres.md, \"Read replicas\").")
        return entry
