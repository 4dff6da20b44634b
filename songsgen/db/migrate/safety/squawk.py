"""squawk, the second judge of `migrate --check-safety`: it lints the PostgreSQL SQL of a pending migration.

squawk (PyPI `squawk-cli`, a binary that runs offline) reads the SQL `sqlmigrate` would print and knows
PostgreSQL's locks statement by statement, including RunSQL text that our operation checks never see. Rules
we disagree with are switched off, each with its reason, in `.squawk.toml` at the repository root.

squawk cannot see how big a table is, nor that a varchar widening rewrites nothing: a lock-taking rule on a
table below `SONGSGEN_MIGRATE_BIG_TABLE_ROWS`, or a type change our rule knows is a widening, becomes a note
saying why ours overruled it. Where squawk says what one of our checks already said for the
same migration, ours is kept and marked as agreed by squawk (`safety.check_plan` merges them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.migration import Migration
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

from songsgen.db.exceptions import SquawkError
from songsgen.db.migrate.safety.rules import squawk_size_sensitive

DOCS = "https://squawkhq.com/docs/"
TIMEOUT_SECONDS = 60

FIXES = {
    "require-concurrent-index-creation": "Use django.contrib.postgres.operations.AddIndexConcurrently in a "
    "migration with atomic = False (in RunSQL: CREATE INDEX CONCURRENTLY, atomic = False).",
    "adding-required-field": "Add the column as null=True or with db_default=…, backfill it, and make it NOT NULL "
    "in a later migration.",
    "constraint-missing-not-valid": "Add the constraint NOT VALID (AddConstraintNotValid, or NOT VALID in RunSQL), "
    "then VALIDATE CONSTRAINT in a later migration.",
    "syntax-error": "squawk could not parse this SQL, so it judged nothing in this migration: check the RunSQL "
    "text, or review the migration by hand and run with --allow-unsafe.",
    "SQUAWK_MISSING": "Install it into the environment that runs manage.py: pip install -r requirements.txt "
    "(squawk-cli), or put squawk on PATH.",
    "SQUAWK_FAILED": "Run squawk by hand on the migration's SQL (manage.py sqlmigrate … | squawk) to see why; "
    "a rule name in .squawk.toml may be misspelled.",
}

_COLUMN_TYPE = re.compile(r'ALTER\s+TABLE\s+"?([^"\s]+)"?\s+ALTER\s+COLUMN\s+"?([^"\s]+)"?\s+(?:SET\s+DATA\s+)?TYPE\b',
                          re.IGNORECASE)
_TABLE = re.compile(r'\b(?:ON|ALTER\s+TABLE(?:\s+IF\s+EXISTS)?(?:\s+ONLY)?)\s+"?([^"\s(;]+)"?', re.IGNORECASE)


@dataclass(frozen=True)
class Violation:
    """One squawk violation, with the statement it was found in."""

    rule: str
    message: str
    help: str
    statement: str
    blocking: bool

    @property
    def fix(self) -> str:
        return FIXES.get(self.rule) or (
            f"{self.help or 'See the rule'} ({DOCS}{self.rule}). To disagree for the whole project, "
            "exclude the rule in .squawk.toml with a one-line reason."
        )


def binary() -> str | None:
    """squawk beside this interpreter (a venv used without activation has no PATH entry), else on PATH."""
    beside = Path(sys.executable).parent / "squawk"  # not resolved: a venv's python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("squawk")


def config_path() -> Path:
    """The project's squawk config (rules we switch off, with reasons)."""
    return Path(settings.BASE_DIR) / ".squawk.toml"


@contextmanager
def collecting_only(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """While SQL is collected, not run: on SQLite no write lock and no whole-database foreign-key check.

    Django's SQLite schema editor begins its transaction as the settings say (IMMEDIATE: the write lock) and
    runs `PRAGMA foreign_key_check` over every table on leaving it, also when it only collects SQL. At 1M
    songs that held every writer up for 2.4 s per migration judged (`migrate --check-safety` beside a writer)."""
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()  # connecting sets transaction_mode from the settings
    sqlite: Any = connection  # the SQLite wrapper's own attribute, and an instance attribute over a method
    mode = sqlite.transaction_mode
    sqlite.transaction_mode = "DEFERRED"  # a read snapshot at most: writers go on
    sqlite.check_constraints = lambda table_names=None: None  # nothing was written to check
    try:
        yield
    finally:
        sqlite.transaction_mode = mode
        del sqlite.check_constraints  # the method again


@dataclass(frozen=True)
class CollectedSQL:
    """A migration's SQL as `sqlmigrate` prints it, and the operations whose SQL could not be collected."""

    sql: str
    skipped: tuple[tuple[Operation, str], ...] = ()  # (operation, why) for each operation left out of `sql`


def collect(connection: BaseDatabaseWrapper, migration: Migration, state: ProjectState,
            safe_forms: bool = False) -> CollectedSQL:
    """`migration`'s SQL from `state` (the state before it; not mutated), one operation at a time.

    `Migration.apply(collect_sql=True)`'s steps, but an operation whose SQL cannot be collected (its schema
    editor introspects the live database for what an earlier migration of the same plan only creates, e.g. a
    unique_together removed right after it was added) is left out and named, instead of failing the check."""
    state = state.clone()
    skipped: list[tuple[Operation, str]] = []
    atomic = migration.atomic and not safe_forms  # run with safe DDL: operation by operation, as it will run
    with collecting_only(connection), connection.schema_editor(collect_sql=True, atomic=atomic) as editor:
        if safe_forms:
            editor.safe_forms = True  # type: ignore[attr-defined]  # as our PostgreSQL schema editor runs them
        for op in migration.operations:
            editor.collected_sql += ["--", f"-- {op.describe()}", "--"]
            if not op.reduces_to_sql:
                editor.collected_sql.append("-- THIS OPERATION CANNOT BE WRITTEN AS SQL")
                op.state_forwards(migration.app_label, state)
                continue
            before, marks = state.clone(), (len(editor.collected_sql), len(editor.deferred_sql))
            op.state_forwards(migration.app_label, state)
            try:
                # A savepoint, so a failed introspection query cannot abort the collecting transaction.
                with transaction.atomic(using=connection.alias) if connection.in_atomic_block else nullcontext():
                    op.database_forwards(migration.app_label, editor, before, state)
            except Exception as exc:  # anything an operation raises: it is named, never a crash of the check
                del editor.collected_sql[marks[0]:], editor.deferred_sql[marks[1]:]
                skipped.append((op, f"{type(exc).__name__}: {exc}"))
                editor.collected_sql.append("-- (SQL not collected)")
    statements = list(editor.collected_sql)
    if atomic and connection.features.can_rollback_ddl:
        statements = ["BEGIN;", *statements, "COMMIT;"]
    return CollectedSQL("\n".join(statements) + "\n", tuple(skipped))


def migration_sql(connection: BaseDatabaseWrapper, migration: Migration, state: ProjectState) -> str:
    """The SQL `sqlmigrate` prints for `migration`, from `state` (the state before it; not mutated)."""
    return collect(connection, migration, state).sql


def _pg_version(connection: BaseDatabaseWrapper) -> str | None:
    version = getattr(connection, "pg_version", None)  # 150004 for 15.4
    return f"{version // 10000}.{version % 10000}" if version else None


def run(sql: str, *, pg_version: str | None = None, config: Path | None = None) -> list[dict[str, object]]:
    """squawk's JSON report on `sql` (a list of violations). Raises SquawkError."""
    program = binary()
    if program is None:
        raise SquawkError("squawk is not installed")
    args = [program, "--reporter", "json", "--stdin-filepath", "migration.sql"]
    if config is not None and config.is_file():
        args += ["--config", str(config)]
    if pg_version:
        args += ["--pg-version", pg_version]
    try:
        result = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SquawkError(f"squawk did not run: {exc}") from exc
    try:
        report = json.loads(result.stdout or "null")
    except ValueError:
        report = None
    if result.returncode not in (0, 1) or not isinstance(report, list):
        text = (result.stderr or result.stdout).strip().splitlines()
        raise SquawkError(f"squawk exited {result.returncode}: {' / '.join(text[-3:]) or 'no output'}")
    return report


def _statement(lines: list[str], item: dict[str, Any]) -> str:
    start = int(item.get("line") or 0)  # squawk counts lines from 0
    end = max(start, int(item.get("line_end") or start))
    text = " ".join(line.strip() for line in lines[start:end + 1]).strip()
    return text if len(text) <= 200 else text[:199] + "…"


class OurJudgment(Protocol):
    """What our own checks know better than squawk; each says why squawk is overruled, or None."""

    def small(self, table: str) -> str | None:
        """Why `table` is not big (its rows below the threshold, or not there before the plan)."""

    def widening(self, table: str, column: str) -> str | None:
        """Why changing this column's type rewrites nothing (a varchar widened, or turned into text)."""


def judge(
    connection: BaseDatabaseWrapper, migration: Migration, state: ProjectState, ours: OurJudgment
) -> list[Violation]:
    """squawk's violations for one migration, overruled where `ours` knows better."""
    return judge_sql(connection, migration_sql(connection, migration, state), ours)


def _overruled(rule: str, statement: str, ours: OurJudgment) -> str | None:
    column = _COLUMN_TYPE.search(statement) if rule == "changing-column-type" else None
    reason = ours.widening(*column.groups()) if column else None
    table = _TABLE.search(statement) if rule in squawk_size_sensitive() else None
    return reason or (ours.small(table.group(1)) if table else None)


def judge_sql(connection: BaseDatabaseWrapper, sql: str, ours: OurJudgment) -> list[Violation]:
    """squawk's violations for a migration's SQL (`collect`), collected once for both SQL judges.

    squawk fails on any violation (rules we disagree with are off in .squawk.toml), but where our judgment
    knows better (a small table, a varchar widening) the violation is a note saying why it was overruled."""
    lines = sql.splitlines()
    found = []
    for item in run(sql, pg_version=_pg_version(connection), config=config_path()):
        rule = str(item.get("rule_name") or "unknown")
        statement = _statement(lines, item)
        message = str(item.get("message") or "")
        reason = _overruled(rule, statement, ours)
        if reason:
            message = f"squawk {rule} overruled: {reason} — {message}"
        found.append(Violation(rule, message, str(item.get("help") or ""), statement, reason is None))
    return found
