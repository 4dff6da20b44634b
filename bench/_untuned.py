"""Run manage.py with some of `songsgen.db.backup.live.beside`'s second threads replaced by inline calls.

    python bench/_untuned.py PIECES manage.py dbbackup ...

PIECES is comma-separated (threads:pack, threads:safety, threads:check, threads:verify; "threads" names
the four; empty runs untouched): what backup_bench.py's --without and --compare time against all on.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any


def untune(off: set[str]) -> None:
    """Make `beside` run the named pieces' work first, in the caller's thread."""
    from songsgen.db.backup import live

    threaded = live.beside

    @contextlib.contextmanager
    def beside(piece: str, work: Callable[[], Any]) -> Iterator[Future[Any]]:
        if piece not in off and not (piece.startswith("threads:") and "threads" in off):
            with threaded(piece, work) as future:
                yield future
            return
        done: Future[Any] = Future()
        try:
            done.set_result(work())
        except Exception as exc:
            done.set_exception(exc)
        yield done

    live.beside = beside  # type: ignore[assignment]


def main() -> None:
    pieces, script, *args = sys.argv[1:]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")
    off = {piece.strip() for piece in pieces.split(",") if piece.strip()}
    if off:
        untune(off)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
