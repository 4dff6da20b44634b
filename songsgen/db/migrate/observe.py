"""Who hears about online rebuilds: the migrate run that wants the figures and the progress lines.

The schema editor is made by Django deep inside the executor, so the run registers here instead
of passing a callback through it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Done(Protocol):
    """An online rebuild (SQLite) or a statement run in its safe form (PostgreSQL), as the report keeps it."""

    def as_dict(self) -> dict[str, Any]: ...


_listeners: list[tuple[Callable[[Any], None], Callable[[str], None] | None]] = []


@contextmanager
def listening(on_done: Callable[[Any], None], on_line: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hear of each online rebuild or safe form finished, and progress lines, while the body runs."""
    entry = (on_done, on_line)
    _listeners.append(entry)
    try:
        yield
    finally:
        _listeners.remove(entry)


def done(stats: Done) -> None:
    for on_done, _ in list(_listeners):
        on_done(stats)


def progress_line(line: str) -> None:
    for _, on_line in list(_listeners):
        if on_line is not None:
            on_line(line)
