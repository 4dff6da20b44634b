"""The database router: reads that tolerate a little lag to a usable replica, everything else to the primary."""

from __future__ import annotations

import itertools
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model

from songsgen.db import diagnose
from songsgen.db.replicas.context import current, settle
from songsgen.db.replicas.health import aliases, health

# Read from the primary always: the session holds the reader's last write position (read before it is known); who
# the user is and what they may do (request.user, is_active, is_staff, permissions, the admin's log) must not lag,
# or a deactivated staff member keeps the admin while the replica is behind. A join to users inside another model's
# query (the song list's) goes where that query goes.
PRIMARY_APPS = frozenset({"sessions", "auth", "contenttypes", "accounts", "admin"})
_turn = itertools.count()


def _connected(alias: str) -> bool:
    """This thread's connection to the replica works (checked once a request, as CONN_HEALTH_CHECKS does)."""
    connection = connections[alias]
    try:
        connection.close_if_health_check_failed()
        connection.ensure_connection()
    except DatabaseError as exc:
        connection.close()
        health.mark_down(alias, diagnose.explain(exc) or type(exc).__name__)
        return False
    return True


def pick_replica(required_lsn: int) -> tuple[str | None, str]:
    """A usable replica that has replayed `required_lsn`, taken in turn; else None and why."""
    names = aliases()
    why = ""
    start = next(_turn)
    for offset in range(len(names)):
        alias = names[(start + offset) % len(names)]
        state = health.state(alias)
        if not state.usable:
            why = why or f"{alias} {state.problem}"
            continue
        # the replay position is at most a check interval old: the replica can only be further on
        if required_lsn and state.replay_lsn < required_lsn:
            why = why or f"{alias} has not yet replayed your last change"
            continue
        if _connected(alias):
            return alias, ""
        why = why or f"{alias} {health.state(alias).problem}"
    return None, why


def read_connection(connection: BaseDatabaseWrapper) -> BaseDatabaseWrapper:
    """For read-only queries on an explicit connection that tolerate a little lag (the monitoring's counts,
    dbcheck's read checks): this thread's connection to a usable replica when `connection` is the primary's outside
    a transaction; else `connection` (no replica, none usable, or another database)."""
    if connection.alias != DEFAULT_DB_ALIAS or connection.in_atomic_block or not aliases():
        return connection
    alias, _ = pick_replica(0)
    return connections[alias] if alias else connection


class ReplicaRouter:
    """Reads inside `replica_reads` (the admin's safe requests) to a replica; writes, transactions, migrations and
    every other read to the primary."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        reads = current()
        if reads is None or not reads.allowed or model._meta.app_label in PRIMARY_APPS:
            return DEFAULT_DB_ALIAS
        settle(reads)
        if reads.wrote or connections[DEFAULT_DB_ALIAS].in_atomic_block:
            reads.served, reads.why_primary = DEFAULT_DB_ALIAS, "inside a transaction"
            return DEFAULT_DB_ALIAS
        alias, why = pick_replica(reads.required_lsn)
        reads.served, reads.why_primary = alias or DEFAULT_DB_ALIAS, why
        return reads.served

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:
        reads = current()
        if reads is not None:
            reads.wrote = True
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        ours = {DEFAULT_DB_ALIAS, *aliases()}
        return True if obj1._state.db in ours and obj2._state.db in ours else None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        return False if db in aliases() else None
