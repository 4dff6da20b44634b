"""The command-line boundary: an operator's mistake ends in one line on stderr, not a traceback.

Settings and database errors escape every command class, so `main()` (and the excepthook for the
other entry points) words them; anything unrecognised keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from enum import IntEnum
from types import TracebackType
from typing import NamedTuple


class ExitCode(IntEnum):
    """Every command's exit codes, defined once; a CommandError without a returncode exits FAILED."""

    OK = 0
    FAILED = 1  # stopped; nothing left half-done (migrate: the database is back at its migrations)
    REFUSED = 2  # as argparse's usage errors: refused before anything changed; fix what the line says
    BROKEN = 3  # failed and the database could NOT be brought back: the operator must act


class Failure(NamedTuple):
    """What to print and the exit code, for an error an operator can fix."""

    line: str
    code: ExitCode


def recognise(exc: BaseException) -> Failure | None:
    """The one line and exit code for an operator's mistake; None for anything else (a bug?)."""
    from django.core.exceptions import ImproperlyConfigured

    if isinstance(exc, ImproperlyConfigured):
        return Failure(_one_line(f"Configuration error: {exc}"), ExitCode.REFUSED)
    from songsgen.db import diagnose
    from songsgen.db.exceptions import DatabaseToolError

    if isinstance(exc, DatabaseToolError):
        return Failure(_one_line(f"Error: {exc}"), ExitCode.FAILED)
    try:
        explained = diagnose.explain(exc)
    except Exception:  # diagnosing must never hide the error it looks at
        return None
    return Failure(_one_line(f"Database error: {explained}"), ExitCode.REFUSED) if explained else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def wants_traceback(argv: Sequence[str]) -> bool:
    """`--traceback`, or verbosity 3 (`-v3`, `-v 3`, `--verbosity=3`, …) as Django spells them."""
    args = list(argv)
    if "--traceback" in args:
        return True
    for index, arg in enumerate(args):
        if arg in ("-v", "--verbosity") and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith("--verbosity="):
            value = arg.partition("=")[2]
        elif arg.startswith("-v") and not arg.startswith("--"):
            value = arg[2:]
        else:
            continue
        if value.strip() == "3":
            return True
    return False


def main(argv: Sequence[str] | None = None) -> None:
    """Run a management command (manage.py's main); a recognised failure exits with its one line."""
    from django.core.management import execute_from_command_line

    argv = list(sys.argv if argv is None else argv)
    try:
        execute_from_command_line(argv)
    except Exception as exc:
        failure = recognise(exc)
        if failure is None or wants_traceback(argv[1:]):
            raise
        sys.stderr.write(failure.line + "\n")
        sys.exit(failure.code)


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    try:
        failure = recognise(exc) if isinstance(exc, Exception) else None
    except Exception:  # never lose the original error to the hook's own
        failure = None
    if failure is None or wants_traceback(sys.argv[1:]):
        sys.__excepthook__(kind, exc, tb)
    else:
        sys.stderr.write(failure.line + "\n")  # the interpreter still exits with 1


def install_excepthook() -> None:
    """Print a settings error escaping any entry point as one line (another's hook left alone)."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook
