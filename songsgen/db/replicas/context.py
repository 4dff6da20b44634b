"""Who may read a replica now, and from which WAL position on: one `Reads` per request or command (a contextvar)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections


@dataclass
class Reads:
    """One reader's reads: allowed on a replica at all, and only on one that has replayed `required_lsn`."""

    allowed: bool = True
    required_lsn: int = 0  # the reader's last write, as a WAL position (0: none known)
    wrote: bool = False  # wrote since `required_lsn` was taken: the position must be read again
    served: str = DEFAULT_DB_ALIAS  # the database the last routed read went to
    why_primary: str = ""  # why that was the primary, when a replica is configured


_current: ContextVar[Reads | None] = ContextVar("songsgen_replica_reads", default=None)


def current() -> Reads | None:
    """The reads of this request or command, or None outside `replica_reads` (then everything is the primary's)."""
    return _current.get()


@contextmanager
def replica_reads(*, allowed: bool = True, required_lsn: int = 0) -> Iterator[Reads]:
    """Let the reads inside go to a replica that has replayed `required_lsn` and this block's own writes."""
    reads = Reads(allowed=allowed, required_lsn=required_lsn)
    token = _current.set(reads)
    try:
        yield reads
    finally:
        _current.reset(token)


def parse_lsn(text: str | None) -> int:
    """A pg_lsn's text (`16/B374D848`) as a number that compares as WAL positions do; 0 for nothing."""
    if not text:
        return 0
    high, _, low = str(text).partition("/")
    try:
        return (int(high, 16) << 32) + int(low, 16)
    except ValueError:
        return 0


def format_lsn(value: int) -> str:
    """A WAL position as PostgreSQL writes it."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def primary_lsn() -> int:
    """Where the primary's WAL ends now (insert position: every commit so far is before it), or 0 if unknown."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql":
        return 0
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            row = cursor.fetchone()
    except DatabaseError:
        return 0
    return parse_lsn(row[0] if row else None)


def settle(reads: Reads) -> None:
    """After writes outside a transaction: take the primary's position, from which a replica may serve again."""
    if reads.wrote and not connections[DEFAULT_DB_ALIAS].in_atomic_block:
        reads.required_lsn = max(reads.required_lsn, primary_lsn())
        reads.wrote = False
