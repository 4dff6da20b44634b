"""Read-your-writes for the admin: the reader's last write position kept in its session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponseBase

from songsgen.db.replicas.context import Reads, format_lsn, parse_lsn, primary_lsn, replica_reads

SESSION_KEY = "_songsgen_wal_lsn"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# statements that change nothing: anything else sent to the primary during a request counts as a write
_READ_ONLY = ("SELECT", "SHOW", "SET", "SAVEPOINT", "RELEASE", "ROLLBACK", "EXPLAIN")


def _writes_seen(reads: Reads) -> Callable[..., Any]:
    """An execute wrapper marking `reads` as written by a statement the router never saw (raw SQL)."""

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if not str(sql).lstrip().upper().startswith(_READ_ONLY):
            reads.wrote = True
        return execute(sql, params, many, context)

    return wrapper


class ReplicaReadsMiddleware:
    """A safe request may read a replica that has replayed its user's last write; after a request that wrote,
    the primary's WAL position goes into the session (a request that wrote nothing leaves the session alone: an
    anonymous or refused POST creates no session)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        session = getattr(request, "session", None)
        required = parse_lsn(session.get(SESSION_KEY)) if session is not None else 0
        safe = request.method in SAFE_METHODS
        with replica_reads(allowed=safe, required_lsn=required) as reads:
            with connections[DEFAULT_DB_ALIAS].execute_wrapper(_writes_seen(reads)):
                response = self.get_response(request)
            if session is not None and (reads.wrote or reads.required_lsn > required):
                written = max(primary_lsn() if reads.wrote else 0, reads.required_lsn)
                if written > required:
                    session[SESSION_KEY] = format_lsn(written)
        return response
