"""The cut-over of an online rebuild: the table aside, the shadow into its name, in one transaction.

SQLite cannot rename an index, and the shadow's indexes had to be built under other names while
the table's own existed: they are renamed in the schema table itself, the procedure SQLite's
ALTER TABLE documentation gives for changes ALTER TABLE cannot make (writable_schema, then the
schema version bumped so every connection reloads it)."""

from __future__ import annotations

import re
from typing import Any

from songsgen.db.migrate.online import names
from songsgen.db.migrate.online.ddl import Spec


class SwapRefused(Exception):
    """The cut-over found the shadow and the table apart: it rolled back, the table is untouched."""


def swap(cursor: Any, spec: Spec) -> tuple[int, int]:
    """Run the cut-over in the caller's transaction; return the table's own triggers re-created and
    those dropped because they name a column the new schema removed."""
    table, shadow, old = spec.table, spec.shadow, names.old(spec.table)
    qt, qs, qo = names.quote(table), names.quote(shadow), names.quote(old)
    cursor.execute("PRAGMA foreign_keys")
    if cursor.fetchone()[0]:
        raise SwapRefused("foreign keys are enforced on this connection: renaming would rewrite references")
    cursor.execute(f"SELECT (SELECT count(*) FROM {qt}), (SELECT count(*) FROM {qs})")
    rows, copied = cursor.fetchone()
    if rows != copied:
        raise SwapRefused(f"{table} holds {rows} rows and its copy {copied}")
    gone = _columns(cursor, table) - _columns(cursor, shadow)
    cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [table])
    own = [(name, sql) for name, sql in cursor.fetchall() if not name.startswith(names.CAPTURE)]
    for kind in names.KINDS:
        cursor.execute(f"DROP TRIGGER IF EXISTS {names.quote(names.trigger(table, kind))}")
    for name, _sql in own:
        cursor.execute(f"DROP TRIGGER {names.quote(name)}")
    cursor.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = %s AND sql IS NOT NULL",
                   [table])
    old_indexes = [row[0] for row in cursor.fetchall()]
    _carry_sequence(cursor, table, shadow)
    cursor.execute("PRAGMA legacy_alter_table")
    legacy = int(cursor.fetchone()[0])
    cursor.execute("PRAGMA legacy_alter_table = ON")  # other tables' REFERENCES keep naming `table`
    try:
        cursor.execute(f"ALTER TABLE {qt} RENAME TO {qo}")
        cursor.execute(f"ALTER TABLE {qs} RENAME TO {qt}")
    finally:  # a connection setting: left ON, a later RenameModel would not rewrite the references to it
        cursor.execute(f"PRAGMA legacy_alter_table = {'ON' if legacy else 'OFF'}")
    renames = [(n, names.old_index(n)) for n in old_indexes] + [(names.new_index(n), n) for n in spec.indexes]
    _rename_indexes(cursor, renames)
    kept = 0
    for _name, sql in own:
        if any(re.search(rf"\b{re.escape(column)}\b", sql, re.I) for column in gone):
            continue
        cursor.execute(sql)
        kept += 1
    cursor.execute(f"PRAGMA index_list({qt})")
    live = {row[1] for row in cursor.fetchall() if not row[1].startswith("sqlite_autoindex_")}
    if live != set(spec.indexes):
        raise SwapRefused(f"{table}'s indexes after the swap are {sorted(live)}, not {sorted(spec.indexes)}")
    return kept, len(own) - kept


def _columns(cursor: Any, table: str) -> set[str]:
    cursor.execute(f"PRAGMA table_info({names.quote(table)})")
    return {row[1] for row in cursor.fetchall()}


def _carry_sequence(cursor: Any, table: str, shadow: str) -> None:
    """AUTOINCREMENT: the shadow's counter starts at the table's, so no id is ever handed out twice
    (Django's own rebuild restarts it at the largest id left)."""
    cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")
    if cursor.fetchone() is None:
        return
    cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
    row = cursor.fetchone()
    if row is None:
        return
    cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = %s", [shadow])
    if "AUTOINCREMENT" not in (cursor.fetchone()[0] or "").upper():
        return
    cursor.execute("UPDATE sqlite_sequence SET seq = max(seq, %s) WHERE name = %s", [row[0], shadow])
    if cursor.rowcount == 0:
        cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [shadow, row[0]])


def _rename_indexes(cursor: Any, renames: list[tuple[str, str]]) -> None:
    if not renames:
        return
    cursor.execute("PRAGMA schema_version")
    version = int(cursor.fetchone()[0])
    cursor.execute("PRAGMA writable_schema = ON")
    try:
        for before, after in renames:
            cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = %s", [before])
            sql = cursor.fetchone()[0]
            head = f"INDEX {names.quote(before)}"
            if head not in sql:
                raise SwapRefused(f"index {before} is not written as {head!r}: {sql}")
            cursor.execute("UPDATE sqlite_master SET name = %s, sql = %s WHERE type = 'index' AND name = %s",
                           [after, sql.replace(head, f"INDEX {names.quote(after)}", 1), before])
        cursor.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        cursor.execute("PRAGMA writable_schema = OFF")
