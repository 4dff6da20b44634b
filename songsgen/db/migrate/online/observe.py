"""Who hears about online rebuilds: the migrate run that wants the figures and the progress lines.

The schema editor is made by Django deep inside the executor, so the run registers here instead
of passing a callback through it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from songsgen.db.migrate.online.rebuild import Stats

_listeners: list[tuple[Callable[[Stats], None], Callable[[str], None] | None]] = []


@contextmanager
def listening(on_done: Callable[[Stats], None], on_line: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hear of each online rebuild finished, and its progress lines, while the body runs."""
    entry = (on_done, on_line)
    _listeners.append(entry)
    try:
        yield
    finally:
        _listeners.remove(entry)


def done(stats: Stats) -> None:
    for on_done, _ in list(_listeners):
        on_done(stats)


def progress_line(line: str) -> None:
    for _, on_line in list(_listeners):
        if on_line is not None:
            on_line(line)
