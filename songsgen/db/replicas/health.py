"""Each replica's state, looked at most every READ_REPLICA_CHECK_SECONDS per process: lag, replay position."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from songsgen.db import diagnose
from songsgen.db.replicas.context import parse_lsn

# On a hot standby: the last position replayed, and how far behind that is. Replayed all the primary had flushed
# when this check began (%s, read from the primary): 0 s; else the time since the last transaction it replayed
# committed. Judged against the primary, not the standby's own receive position: a standby cut off from the primary
# has replayed all it received and would read 0 s forever.
PROBE = """
SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
       CASE WHEN pg_last_wal_replay_lsn() >= %s::pg_lsn THEN 0
            ELSE EXTRACT(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END
"""


@dataclass(frozen=True)
class ReplicaState:
    """What the last look at one replica found."""

    alias: str
    answered: bool
    lag_seconds: float | None = None
    replay_lsn: int = 0
    checked: float = 0.0  # time.monotonic() of the look
    problem: str = ""  # why it is not usable, when it is not

    @property
    def usable(self) -> bool:
        return not self.problem


def aliases() -> list[str]:
    """The replicas' database aliases (DATABASE_REPLICA_URLS), in order."""
    return [alias for alias in settings.DATABASES if alias != DEFAULT_DB_ALIAS and alias.startswith("replica")]


def primary_flushed() -> str | None:
    """Where the primary's WAL is flushed to now (all a standby can have been sent), or None if it cannot say."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql":
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_flush_lsn()::text")
            row = cursor.fetchone()
    except DatabaseError:
        return None
    return str(row[0]) if row and row[0] else None


def probe(alias: str) -> ReplicaState:
    """Look at one replica now, through this thread's connection to it (at most its connect timeout)."""
    connection = connections[alias]
    now = time.monotonic()
    # the flush position, not the insert one: a standby cannot have more, and the insert position can sit past a
    # page header no record follows yet, which an idle standby would never reach
    target = primary_flushed()
    try:
        connection.close_if_health_check_failed()
        with connection.cursor() as cursor:
            # the primary unknown: no position to judge against, so the standby counts as behind (the timestamp)
            cursor.execute(PROBE, [target or "FFFFFFFF/FFFFFFFF"])
            row = cursor.fetchone()
    except DatabaseError as exc:
        try:
            connection.close()
        except DatabaseError:
            pass
        text = str(exc).strip()
        reason = diagnose.explain(exc) or (text.splitlines()[0] if text else type(exc).__name__)
        return ReplicaState(alias, answered=False, checked=now, problem=f"does not answer ({reason})")
    in_recovery, replay, lag = row if row else (False, None, None)
    lag = None if lag is None else max(0.0, float(lag))
    limit = float(settings.READ_REPLICA_MAX_LAG_SECONDS)
    problem = ""
    if not in_recovery:
        problem = "is not a standby (promoted?): not read from"
    elif lag is None:
        problem = "has replayed nothing yet"
    elif lag > limit:
        problem = f"is {lag:.1f} s behind (limit {limit:g} s)"
    return ReplicaState(alias, answered=True, lag_seconds=lag, replay_lsn=parse_lsn(replay), checked=now,
                        problem=problem)


class Health:
    """The process's view of its replicas: a state per replica, renewed when older than the check interval."""

    def __init__(self) -> None:
        self._states: dict[str, ReplicaState] = {}
        self._lock = threading.Lock()
        self._looking: set[str] = set()

    def state(self, alias: str) -> ReplicaState:
        """The replica's state; a stale one is renewed by this thread unless another is already looking."""
        known = self._states.get(alias)
        if known is not None and time.monotonic() - known.checked < float(settings.READ_REPLICA_CHECK_SECONDS):
            return known
        with self._lock:
            if alias in self._looking and known is not None:
                return known  # another thread is looking: the last state until it is done
            self._looking.add(alias)
        try:
            return self.record(probe(alias))
        finally:
            with self._lock:
                self._looking.discard(alias)

    def record(self, state: ReplicaState) -> ReplicaState:
        """Keep `state` as the replica's until the next look (a failed query marks it down at once)."""
        self._states[state.alias] = state
        return state

    def mark_down(self, alias: str, problem: str) -> None:
        """A connection to the replica just failed: skip it until the next look is due."""
        self.record(ReplicaState(alias, answered=False, checked=time.monotonic(), problem=f"does not answer "
                                                                                          f"({problem})"))

    def forget(self) -> None:
        """Drop every state (the next read looks again)."""
        self._states.clear()


health = Health()
