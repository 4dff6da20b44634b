"""One shape for "where a long command stands", handed to its progress callback after each batch.

The seed (songs/demo.py) and the transfer (songsgen/db/move/transfer.py) report through it; the rate and the
time left are worked out here, once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """`done` of `total` units (rows) in `phase`, `elapsed` seconds into it; `table` when the work is per table."""

    phase: str
    done: int
    total: int
    elapsed: float
    table: str = ""
    table_done: int = 0
    table_total: int = 0

    @property
    def rate(self) -> float:
        """Units per second in this phase so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left in this phase at the rate so far, when there is a rate."""
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    @property
    def share(self) -> float:
        """The part of the phase done, 0 to 1."""
        return self.done / self.total if self.total else 1.0


def duration(seconds: float) -> str:
    """Seconds as a short human time: 42s, 3m05s, 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
