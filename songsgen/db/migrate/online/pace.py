"""How an online rebuild paces itself: chunks sized to hold the write lock ~40 ms, a pause after each
long enough for every queued writer to get in, and a brake while the WAL is not being checkpointed."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

# seconds a chunk aims to hold the write lock (the bound is ~50 ms)
TARGET_LOCK = 0.04
# A writer waiting on SQLite's busy handler retries after sleeps of 1, 2, 5, 10, 15, 20 and 25 ms for its
# first ~100 ms, then of 50 and 100 ms. After a chunk that held the lock briefly, a free window a little
# longer than 25 ms lets every queued writer in at its next retry; after a longer one (a commit that
# flushed a checkpoint, a slow disk) a writer may be between 100 ms sleeps, and a 30 ms window every
# ~120 ms can miss it again and again (queueing 0002 at 1M songs: 17 waits of 0.5-1.04 s).
MIN_PAUSE = 0.03
LONG_HOLD = 0.07  # seconds: a chunk held longer than this is followed by a window of a full 100 ms sleep
LONG_PAUSE = 0.11
FIRST_CHUNK = 500  # rows (rowid span) of the first chunk; the next ones are sized from its time
GROWTH = 1.5  # at most this much bigger than the last chunk: a chunk's time grows faster than its rows
MAX_CHUNK = 1_000_000
WAL_CHECK_EVERY = 1.0  # seconds between two looks at the WAL backlog
BRAKE_STEP = 0.25  # seconds slept while the backlog is over the limit
BRAKE_LIMIT = 60.0  # seconds of braking at most per look: then go on, slowly


def writers_pause(held: float) -> float:
    """Seconds to leave the lock free after a chunk that held it `held` seconds."""
    return MIN_PAUSE if held <= LONG_HOLD else LONG_PAUSE


class Pacer:
    """Sizes the next chunk, pauses after each, and brakes while the WAL backlog is too big."""

    def __init__(self, connection: BaseDatabaseWrapper, *, inline: bool) -> None:
        self.connection, self.inline = connection, inline
        self.size = FIRST_CHUNK
        self._next_wal_look = time.monotonic() + WAL_CHECK_EVERY

    def after_chunk(self, held: float) -> float:
        """Adapt the size to `held` (the chunk's time), pause; return the seconds spent braking."""
        if self.inline:
            return 0.0
        factor = TARGET_LOCK / max(held, 1e-4)
        self.size = int(min(MAX_CHUNK, max(50, self.size * min(GROWTH, max(0.5, factor)))))
        time.sleep(writers_pause(held))
        if time.monotonic() < self._next_wal_look:
            return 0.0
        self._next_wal_look = time.monotonic() + WAL_CHECK_EVERY
        return self._brake()

    def _brake(self) -> float:
        """While more of the WAL is unchecked than the limit (a reader or Litestream holds the
        checkpoint back), wait: the copy must not fill the disk or outrun the replica."""
        limit = int(getattr(settings, "ONLINE_REBUILD_WAL_BACKLOG_MB", 256)) * 2**20
        braked = 0.0
        while braked < BRAKE_LIMIT:
            with self.connection.cursor() as cursor:
                cursor.execute("PRAGMA page_size")
                page = int(cursor.fetchone()[0])
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                _busy, frames, done = cursor.fetchone()
            if frames < 0 or (frames - done) * page <= limit:
                return braked
            time.sleep(BRAKE_STEP)
            braked += BRAKE_STEP
        return braked


class Progress:
    """A line with the share done and an ETA every few seconds, for the operator's terminal."""

    EVERY = 5.0

    def __init__(self, table: str, low: int, top: int, out: Callable[[str], None] | None) -> None:
        self.table, self.low, self.top, self.out = table, low, max(top, low + 1), out
        self.clock = time.monotonic()
        self._next = self.clock + self.EVERY

    def at(self, position: int, rows: int) -> None:
        now = time.monotonic()
        if self.out is None or now < self._next:
            return
        self._next = now + self.EVERY
        share = min(1.0, (position - self.low) / (self.top - self.low))
        eta = (now - self.clock) * (1 - share) / share if share > 0 else 0.0
        self.out(f"  online rebuild of {self.table}: {rows:,} rows copied ({share:.0%}), about {eta:.0f} s left")
