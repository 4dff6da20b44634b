"""Our PostgreSQL schema editor: Django's, with each statement that would stall a big table run in its safe form.

Only outside a transaction (the safe migrate runs such a migration operation by operation): CREATE
INDEX CONCURRENTLY and VALIDATE CONSTRAINT cannot run inside one. Inside a transaction (plain
migrate, the test runner, an atomic migration) every statement is Django's."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.db.backends.postgresql.schema import DatabaseSchemaEditor

from songsgen.db.migrate import observe
from songsgen.db.migrate.safeddl import rewrite
from songsgen.db.rowcounts import table_rows_at_least

PAGES_PER_BATCH = 1_000  # 8 MB of the table a batch: tens of milliseconds of row locks


@dataclass
class SafeForm:
    """One statement of Django's replaced by its safe form, for the migrate report."""

    table: str
    kind: str
    original: str
    ran: list[str] = field(default_factory=list)
    seconds: float = 0.0
    longest_step_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


class SafeSchemaEditor(DatabaseSchemaEditor):
    """Statements on a table of at least SONGSGEN_MIGRATE_BIG_TABLE_ROWS rows run in their safe forms."""

    # None: rewrite outside a transaction; True: also while collecting SQL (squawk judges what will run)
    safe_forms: bool | None = None

    def rewrites(self) -> bool:
        if self.safe_forms is not None:
            return self.safe_forms
        return not self.collect_sql and not self.connection.in_atomic_block

    def execute(self, sql: Any, params: Any = ()) -> None:
        if not self.rewrites() or sql is None:
            return super().execute(sql, params)
        text = str(sql) if not params else self.connection.ops.compose_sql(str(sql), params)
        found = rewrite.plan(text)
        table = None if found is None else found.table or self._index_table(found.steps[0].name)
        if found is None or not table or not table_rows_at_least(self.connection, table,
                                                                 int(settings.MIGRATE_BIG_TABLE_ROWS)):
            return super().execute(sql, params)
        found.table = table
        if self.collect_sql:
            for step in found.steps:
                if step.kind in ("run", "batches"):
                    super().execute(step.sql, None)
            return None
        self._run(found)
        return None

    def _run(self, found: rewrite.Plan) -> None:
        done = SafeForm(found.table, found.kind, found.original)
        clock = time.monotonic()
        for step in found.steps:
            if step.kind == "duplicates":
                self._refuse_duplicates(found, step)
                continue
            if step.kind == "drop_invalid" and not self._invalid_index(step.name):
                continue
            if step.kind == "batches":
                self._in_batches(found.table, step.sql)
            tick = time.monotonic()
            try:
                super().execute(step.sql, None)  # "batches": the rows written while the batches ran
            except BaseException:
                if step.undo:
                    self._undo(step.undo)
                raise
            done.ran.append(step.sql)
            done.longest_step_seconds = max(done.longest_step_seconds, time.monotonic() - tick)
        done.seconds = time.monotonic() - clock
        observe.done(done)

    def _in_batches(self, table: str, update: str) -> None:
        """`update` over ranges of the table's pages (a TID range scan), each in a transaction of its own: a
        writer waits on one batch's rows at most, never on every NULL row of a big table at once."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                           [self.quote_name(table)])
            pages = int(cursor.fetchone()[0])
        for low in range(0, pages + 1, PAGES_PER_BATCH):
            super().execute(f"{update} AND ctid >= '({low},0)'::tid AND ctid < '({low + PAGES_PER_BATCH},0)'::tid",
                            None)

    def _undo(self, sql: str) -> None:
        """Remove what a failed step half-made (an INVALID index, a NOT VALID constraint); the error stands."""
        try:
            super().execute(sql, None)
        except Exception:  # noqa: BLE001 — the step's own error is the one to report
            self.connection.close()

    def _refuse_duplicates(self, found: rewrite.Plan, step: rewrite.Step) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(step.sql)
            rows = cursor.fetchall()
        if rows:
            shown = "; ".join(f"{tuple(row[:-1])!r} × {row[-1]}" for row in rows)
            raise IntegrityError(f"{found.table} has duplicate rows for the unique constraint {step.name}: {shown}. "
                                 "Nothing was built; remove the duplicates, then migrate again.")

    def _index_table(self, index: str) -> str | None:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_indexes WHERE schemaname = current_schema() AND indexname = %s",
                           [index])
            row = cursor.fetchone()
        return None if row is None else str(row[0])

    def _invalid_index(self, index: str) -> bool:
        """An index of that name left INVALID by a failed or killed CONCURRENTLY build."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                           "WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace", [index])
            row = cursor.fetchone()
        return bool(row and row[0])
