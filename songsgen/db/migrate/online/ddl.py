"""Django's own rebuild of a table, as statements, turned into the parts an online rebuild runs.

The SQLite schema editor rebuilds a table with four statements (create `new__t`, copy, drop
`t`, rename) and then its deferred index statements. Recording them instead of running them
gives the shadow table's exact DDL — every column, default, CHECK, UNIQUE and foreign key —
and the copy's column mapping, without re-deriving any of it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from songsgen.db.migrate.online import names

Statement = tuple[str, Any]  # SQL text and its params (None or empty: none)

_INDEX = re.compile(r'CREATE (?P<unique>UNIQUE )?INDEX "(?P<name>[^"]+)" ON "(?P<table>[^"]+)"(?P<rest>.*)\Z', re.S)


@dataclass
class Spec:
    """One online rebuild: the shadow's DDL, the copy's SELECT, and the indexes to build on the shadow."""

    table: str
    create: Statement  # CREATE TABLE of the shadow
    columns: list[str]  # the shadow's columns the copy fills, in the SELECT's order
    select: str  # SELECT <the new row from the old one> FROM "table"
    indexes: dict[str, str] = field(default_factory=dict)  # final name -> CREATE INDEX on the shadow, temporary name
    after: list[Statement] = field(default_factory=list)  # deferred statements about other tables: run after

    @property
    def shadow(self) -> str:
        return names.shadow(self.table)


def parse(statements: list[Statement], table: str) -> Spec | None:
    """The spec of Django's rebuild of `table` from its recorded statements; None when they are not
    the four-statement rebuild (then they are run as recorded)."""
    new = "new__" + table
    qnew, qtable = names.quote(new), names.quote(table)
    if len(statements) < 4:
        return None
    (create, create_params), (insert, _), (drop, _), (rename, _) = ((str(s), p) for s, p in statements[:4])
    if not create.startswith(f"CREATE TABLE {qnew} ") or drop != f"DROP TABLE {qtable}" \
            or rename != f"ALTER TABLE {qnew} RENAME TO {qtable}":
        return None
    head = f"INSERT INTO {qnew} ("
    tail = f" FROM {qtable}"
    cut = insert.find(") SELECT ")
    if not insert.startswith(head) or not insert.endswith(tail) or cut < 0:
        return None
    columns = [c.replace('""', '"') for c in re.findall(r'"((?:[^"]|"")*)"', insert[len(head):cut])]
    if ", ".join(names.quote(c) for c in columns) != insert[len(head):cut]:
        return None
    qshadow = names.quote(names.shadow(table))
    spec = Spec(table=table, create=(create.replace(qnew, qshadow), create_params), columns=columns,
                select=insert[cut + 2:])
    for sql, params in statements[4:]:
        text = str(sql)
        match = _INDEX.match(text)
        if match and match["table"] == table and not params:
            temp = names.new_index(match["name"])
            spec.indexes[match["name"]] = (f'CREATE {match["unique"] or ""}INDEX {names.quote(temp)} ON '
                                           f'{qshadow}{match["rest"]}')
        else:
            spec.after.append((sql, params))
    return spec
