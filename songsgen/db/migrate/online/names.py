"""The names an online rebuild gives its shadow table, old table, capture triggers and indexes.

One prefix for all, so that a crashed rebuild's leftovers can be found by name alone."""

from __future__ import annotations

PREFIX = "_songsgen_"
SHADOW = PREFIX + "new__"
OLD = PREFIX + "old__"
CAPTURE = PREFIX + "capture__"
NEW_INDEX = PREFIX + "ix__"
OLD_INDEX = PREFIX + "oldix__"
KINDS = ("insert", "update", "delete")


def shadow(table: str) -> str:
    return SHADOW + table


def old(table: str) -> str:
    return OLD + table


def trigger(table: str, kind: str) -> str:
    return f"{CAPTURE}{table}__{kind}"


def new_index(name: str) -> str:
    return NEW_INDEX + name


def old_index(name: str) -> str:
    return OLD_INDEX + name


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
