"""The safe form of each statement Django's PostgreSQL schema editor writes that would stall a big table.

A plan is a list of steps, each run in its own transaction outside any other: a step that fails
leaves the steps after it unrun, and its `undo` (if any) runs before the error is raised, so no
half-built object (an INVALID index, a NOT VALID constraint) is left behind."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IDENT = r'"(?:[^"]|"")+"'
DEFERRABLE = r"(?P<deferrable>(?: DEFERRABLE INITIALLY DEFERRED)?)"
_PATTERNS = {
    "index": re.compile(rf"CREATE (?P<unique>UNIQUE )?INDEX (?P<name>{IDENT}) ON (?P<table>{IDENT})(?P<rest>.*)\Z",
                        re.S),
    "drop_index": re.compile(rf"DROP INDEX IF EXISTS (?P<name>{IDENT})\Z"),
    "fk": re.compile(rf"ALTER TABLE (?P<table>{IDENT}) ADD CONSTRAINT (?P<name>{IDENT}) (?P<body>FOREIGN KEY .*)\Z",
                     re.S),
    "check": re.compile(rf"ALTER TABLE (?P<table>{IDENT}) ADD CONSTRAINT (?P<name>{IDENT}) (?P<body>CHECK .*)\Z", re.S),
    "unique": re.compile(rf"ALTER TABLE (?P<table>{IDENT}) ADD CONSTRAINT (?P<name>{IDENT}) UNIQUE "
                         rf"(?P<columns>\((?:{IDENT}(?:, )?)+\)){DEFERRABLE}\Z"),
    "not_null": re.compile(rf"ALTER TABLE (?P<table>{IDENT}) ALTER COLUMN (?P<column>{IDENT}) SET NOT NULL\Z"),
    "column_fk": re.compile(rf"ALTER TABLE (?P<table>{IDENT}) ADD COLUMN (?P<column>{IDENT}) (?P<definition>.*?) "
                            rf"CONSTRAINT (?P<name>{IDENT}) REFERENCES (?P<to>{IDENT})\((?P<to_column>{IDENT})\)"
                            rf"{DEFERRABLE}; SET CONSTRAINTS (?:{IDENT}\.)?{IDENT} IMMEDIATE\Z", re.S),
}


def unquote(name: str) -> str:
    return name[1:-1].replace('""', '"')


@dataclass
class Step:
    sql: str
    undo: str | None = None  # run when this step fails (removes what it half-made)
    kind: str = "run"  # "run"; "drop_invalid": run only when the named index exists and is INVALID;
    # "duplicates": a SELECT that must return no row
    name: str = ""  # the index or constraint it is about


@dataclass
class Plan:
    kind: str  # which statement it replaces: index, drop_index, fk, check, unique, not_null, column_fk
    table: str  # unquoted; for drop_index, filled in by the caller from the catalog
    original: str
    steps: list[Step] = field(default_factory=list)


def plan(sql: str) -> Plan | None:
    """The safe form of `sql`, or None when it is not one of the statements rewritten."""
    text = sql.strip()
    for kind, pattern in _PATTERNS.items():
        match = pattern.match(text)
        if match:
            return _BUILD[kind](match, text)
    return None


def _index(m: re.Match[str], text: str) -> Plan:
    name, table = m["name"], m["table"]
    return Plan("index", unquote(table), text, [
        Step(f"DROP INDEX CONCURRENTLY IF EXISTS {name}", kind="drop_invalid", name=unquote(name)),
        Step(f"CREATE {m['unique'] or ''}INDEX CONCURRENTLY {name} ON {table}{m['rest']}",
             undo=f"DROP INDEX CONCURRENTLY IF EXISTS {name}"),
    ])


def _drop_index(m: re.Match[str], text: str) -> Plan:
    drop = Step(f"DROP INDEX CONCURRENTLY IF EXISTS {m['name']}", name=unquote(m["name"]))
    return Plan("drop_index", "", text, [drop])


def _validated(table: str, name: str, add: str) -> list[Step]:
    """ADD … NOT VALID (a brief lock, no scan), then VALIDATE in a transaction of its own (no write lock)."""
    drop = f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"
    return [Step(f"{add} NOT VALID"), Step(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}", undo=drop)]


def _fk(m: re.Match[str], text: str) -> Plan:
    return Plan("fk", unquote(m["table"]), text, _validated(m["table"], m["name"], text))


def _check(m: re.Match[str], text: str) -> Plan:
    return Plan("check", unquote(m["table"]), text, _validated(m["table"], m["name"], text))


def _unique(m: re.Match[str], text: str) -> Plan:
    table, name, columns = m["table"], m["name"], m["columns"]
    names = columns[1:-1]
    not_null = " AND ".join(f"{c} IS NOT NULL" for c in re.findall(IDENT, names))
    duplicates = (f"SELECT {names}, count(*) FROM {table} WHERE {not_null} GROUP BY {names} HAVING count(*) > 1 "
                  "ORDER BY count(*) DESC LIMIT 5")
    return Plan("unique", unquote(table), text, [
        Step(duplicates, kind="duplicates", name=unquote(name)),
        Step(f"DROP INDEX CONCURRENTLY IF EXISTS {name}", kind="drop_invalid", name=unquote(name)),
        Step(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON {table} {columns}",
             undo=f"DROP INDEX CONCURRENTLY IF EXISTS {name}"),
        Step(f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}{m['deferrable']}",
             undo=f"DROP INDEX CONCURRENTLY IF EXISTS {name}"),
    ])


def not_null_check_name(table: str, column: str) -> str:
    """The temporary CHECK's name: PostgreSQL's 63-byte limit, and never one of Django's names."""
    return f'"{(unquote(table) + "_" + unquote(column))[:40]}_songsgen_notnull"'


def _not_null(m: re.Match[str], text: str) -> Plan:
    table, column = m["table"], m["column"]
    check = not_null_check_name(table, column)
    drop = f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}"
    return Plan("not_null", unquote(table), text, [
        Step(drop),  # a killed run's
        *_validated(table, check, f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL)"),
        Step(text, undo=drop),  # PostgreSQL skips the scan: the validated CHECK proves it
        Step(drop),
    ])


def _column_fk(m: re.Match[str], text: str) -> Plan:
    table, name = m["table"], m["name"]
    add_fk = (f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({m['column']}) "
              f"REFERENCES {m['to']} ({m['to_column']}){m['deferrable']}")
    return Plan("column_fk", unquote(table), text, [
        Step(f"ALTER TABLE {table} ADD COLUMN {m['column']} {m['definition']}"),
        *_validated(table, name, add_fk),
    ])


_BUILD = {"index": _index, "drop_index": _drop_index, "fk": _fk, "check": _check, "unique": _unique,
          "not_null": _not_null, "column_fk": _column_fk}
