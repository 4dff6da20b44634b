"""argparse pieces shared by the project's commands and benchmarks: validators (bad values fail
at parse time) and the arguments several commands take alike."""

from __future__ import annotations

import argparse


def non_negative_int(value: str) -> int:
    """An integer >= 0 (underscores allowed: 1_000_000)."""
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def positive_int(value: str) -> int:
    """An integer >= 1."""
    number = non_negative_int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def _number(value: str, not_a_number: str) -> float:
    """`value` as a float, or argparse's error with message `not_a_number` ({value!r} filled)."""
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(not_a_number.format(value=value)) from None


def non_negative_float(value: str) -> float:
    """A number >= 0 (seconds)."""
    number = _number(value, "expected a number of seconds, got {value!r}")
    if not number >= 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return number


def poll_seconds(value: str) -> float:
    """Seconds between looks at an empty queue: above 0, at most an hour (--queue-poll)."""
    seconds = _number(value, "{value!r} is not a number of seconds")
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds, got {value}")
    return seconds


def positive_hours(value: str) -> float:
    """A number of hours > 0 (backupcheck's --max-age)."""
    hours = _number(value, "{value!r} is not a number of hours")
    if not hours > 0 or hours == float("inf"):
        raise argparse.ArgumentTypeError("--max-age must be more than 0 hours")
    return hours


def add_database_pair(parser: argparse.ArgumentParser, *, source_help: str, target_help: str) -> None:
    """`--from URL --to URL` (dest `source`, `target`): transferdb's and dbcompare's databases."""
    parser.add_argument("--from", dest="source", required=True, metavar="URL", help=source_help)
    parser.add_argument("--to", dest="target", required=True, metavar="URL", help=target_help)


def quiet_level(verbosity: int) -> int:
    """A cron command's log level: warnings only at the default verbosity 1, the steps from -v2."""
    import logging

    return {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO}.get(verbosity, logging.DEBUG)
