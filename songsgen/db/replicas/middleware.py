"""Read-your-writes for the admin: the reader's last write position kept in its session."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from songsgen.db.replicas.context import format_lsn, parse_lsn, primary_lsn, replica_reads

SESSION_KEY = "_songsgen_wal_lsn"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ReplicaReadsMiddleware:
    """A safe request may read a replica that has replayed its user's last write; after a request that wrote,
    the primary's WAL position goes into the session."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        session = getattr(request, "session", None)
        required = parse_lsn(session.get(SESSION_KEY)) if session is not None else 0
        safe = request.method in SAFE_METHODS
        with replica_reads(allowed=safe, required_lsn=required) as reads:
            response = self.get_response(request)
            if session is not None and (reads.wrote or not safe or reads.required_lsn > required):
                written = max(primary_lsn() if (reads.wrote or not safe) else 0, reads.required_lsn)
                if written > required:
                    session[SESSION_KEY] = format_lsn(written)
        return response
