"""argparse `type=` validators shared by the project's commands and benchmarks: bad values fail at parse time."""

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
