"""Safety checks on the pending migrations, before anything runs (`migrate --check-safety`).

Three judges, merged per migration:

- django-migration-linter, on the SQL `sqlmigrate` would run (it knows vendor-specific SQL, RunSQL text and
  RunPython conventions). A migration holding its `IgnoreMigration()` operation is skipped, as the linter
  documents.
- Our own rules on the operations and the migration state (`songsgen/db/migrate/safety/rules.py`), for what the
  linter cannot see from SQL alone: whether a table already exists and how big it is, whether a column type
  really changes, and on PostgreSQL which operations hold long exclusive locks.
- On PostgreSQL, squawk on the same SQL (`songsgen/db/migrate/safety/squawk.py`, configured by `.squawk.toml`). Where it
  says what ours or the linter already said for the migration, that finding is kept once, marked as agreed.

Where a second judge disagrees with ours on what ours knows better (a table's size, a varchar widening),
ours decides: the linter's or squawk's finding becomes a note saying why it was overruled.
Every finding carries the fix. Unsafe findings stop `migrate` unless `--allow-unsafe`; nothing a
migration holds crashes the check (CHECK_FAILED, SQL_NOT_COLLECTED name the migration instead).
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import replace

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations import operations as ops
from django.db.migrations.migration import Migration
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState
from django_migration_linter.constants import DJANGO_APPS_WITH_MIGRATIONS

from songsgen.db.exceptions import SquawkError
from songsgen.db.migrate.safety import squawk
from songsgen.db.migrate.safety.operations import OperationChecker
from songsgen.db.migrate.safety.rules import RULES, squawk_same_as
from songsgen.db.problems import Problem
from songsgen.db.rowcounts import bounded_rows

# The check's own findings, which no rule detects (the rules carry their fixes: songsgen/db/migrate/safety/rules.py).
CHECK_FIXES = {
    "BACKWARDS": "Unapplying migrations drops what they created; be sure the data is not needed.",
    "SQL_NOT_COLLECTED": "See the error with manage.py sqlmigrate <app> <migration> once the migrations before it "
    "are applied; if it is the first of the plan, fix the migration or the database it expects.",
    "CHECK_FAILED": "Read the migration's operations and judge them by hand; run with --allow-unsafe only if "
    "they are safe, and report the error.",
}

FIXES = {**{code: found.fix for code, found in RULES.items()}, **CHECK_FIXES}

LINTER_FIX = "See the django-migration-linter documentation for this check."


def _fix(code: str) -> str:
    found = RULES.get(code)
    return found.fix if found else CHECK_FIXES.get(code, LINTER_FIX)


def finding(code: str, migration: str, detail: str, source: str, blocking: bool = True, fix: str = "") -> Problem:
    """One unsafe (or noteworthy) operation in a pending migration; the fix by its code unless given."""
    return Problem(code, migration, detail, blocking, fix or _fix(code), source)


def finding_line(found: Problem) -> str:
    """A finding as migrate prints it: UNSAFE (or note), code and migration, and the fix beneath."""
    level = "UNSAFE" if found.blocking else "note"
    agreed = f" (also {', '.join(found.agreed)})" if found.agreed else ""
    return f"{level} {found.code} in {found.subject}: {found.detail}{agreed}\n    fix: {found.fix}"


def finding_dict(found: Problem) -> dict[str, object]:
    """`Problem.as_dict()` plus the keys migrate's findings[] had before it (`migration` is the subject)."""
    return found.as_dict() | {"code": found.code, "migration": found.subject, "source": found.source,
                              "blocking": found.blocking, "agreed": list(found.agreed), "fix": found.fix}


def big_table_rows() -> int:
    """Rows from which a table counts as big (locks and unique checks matter)."""
    return int(getattr(settings, "MIGRATE_BIG_TABLE_ROWS", 100_000))


class TableRows:
    """The live tables' sizes against the big-table threshold, each counted once per check."""

    def __init__(self, connection: BaseDatabaseWrapper, limit: int) -> None:
        self.connection, self.limit = connection, limit
        self._rows: dict[str, int | None] = {}

    def rows(self, table: str) -> int | None:
        if table not in self._rows:
            self._rows[table] = bounded_rows(self.connection, table, self.limit)
        return self._rows[table]

    def big(self, table: str) -> bool:
        if self.limit <= 0:
            return True
        rows = self.rows(table)
        return rows is not None and rows >= self.limit

    def small(self, table: str) -> str | None:
        """Why `table` is not big, in words for a finding; None when it is."""
        if self.limit <= 0:
            return None
        rows = self.rows(table)
        if rows is None:
            return f"{table} does not exist before this plan, so nothing uses it yet"
        if rows < self.limit:
            return (f"{table} has {rows:,} row{'' if rows == 1 else 's'}, below {self.limit:,} "
                    "(SONGSGEN_MIGRATE_BIG_TABLE_ROWS)")
        return None


class _Ours:
    """Our judgment where a second judge's disagrees (squawk.OurJudgment): table sizes, widenings."""

    def __init__(self, rows: TableRows, widened: dict[tuple[str, str], str]) -> None:
        self.rows, self.widened = rows, widened

    def small(self, table: str) -> str | None:
        return self.rows.small(table)

    def widening(self, table: str, column: str) -> str | None:
        change = self.widened.get((table, column))
        return f"{table}.{column} goes from {change}, which rewrites nothing" if change else None


_UNIQUE_ADDED = re.compile(
    r'ALTER TABLE "?([^"\s]+)"? ADD CONSTRAINT .* UNIQUE|CREATE UNIQUE INDEX .* ON "?([^"\s(]+)"?')
_CREATED = re.compile(r'CREATE TABLE "?([^"\s(]+)"?')


def _linter_overruled(code: str, table: str | None, column: str | None, sql: str,
                      ours: squawk.OurJudgment) -> str | None:
    """Why a blocking linter issue is overruled by our judgment, or None (the linter reads SQL alone)."""
    if code == "ALTER_COLUMN" and table:
        return (ours.widening(table, column) if column else None) or ours.small(table)
    if code == "ADD_UNIQUE":
        created = set(_CREATED.findall(sql))
        tables = {a or b for a, b in _UNIQUE_ADDED.findall(sql)} - created
        reasons = [ours.small(t) for t in sorted(tables)]
        return "; ".join(r for r in reasons if r) if tables and all(reasons) else None
    return None


def linter_findings(
    connection: BaseDatabaseWrapper, migration: Migration, sql: str, ours: squawk.OurJudgment | None = None
) -> list[Problem]:
    """django-migration-linter's findings for one migration, in our shape (the first judge beside ours).

    It reads `sql`, what `sqlmigrate` prints, as `squawk.collect` collects it: without the write lock
    Django's `sqlmigrate` takes on SQLite (squawk.collecting_only). Where `ours` knows better (a small
    table, a varchar widening), a blocking issue becomes a note saying why it was overruled."""
    from django_migration_linter import MigrationLinter
    from django_migration_linter.sql_analyser import analyse_sql_statements

    linter = MigrationLinter(path=str(settings.BASE_DIR), database=connection.alias, no_cache=True, no_output=True)
    label = f"{migration.app_label}.{migration.name}"
    if linter.should_ignore_migration(migration.app_label, migration.name, migration.operations):
        return []
    errors, _ignored, warnings = analyse_sql_statements(linter.sql_analyser_class, sql.splitlines())
    data_errors, _data_ignored, data_warnings = linter.analyse_data_migration(migration)
    findings = []
    for issue, blocking in [(i, True) for i in errors + data_errors] + [(i, False) for i in warnings + data_warnings]:
        if issue.code == "NOT_NULL":
            # Ours decides NOT NULL from the field itself (db_default keeps old writers working); the
            # linter sees only SQL, where SQLite's table rebuild repeats every NOT NULL column.
            continue
        where = ", ".join(x for x in (issue.table, issue.column) if x)
        detail = issue.message + (f" ({where})" if where else "")
        reason = _linter_overruled(issue.code, issue.table, issue.column, sql, ours) if ours and blocking else None
        if reason:
            detail, blocking = f"linter {issue.code} overruled: {reason} — {detail}", False
        findings.append(finding(issue.code, label, detail, "django-migration-linter", blocking))
    return findings


def merge_squawk(found: list[Problem], violations: list[squawk.Violation], label: str) -> list[Problem]:
    """`found` (ours and the linter's for one migration) with squawk's added; a problem said twice is kept once."""
    merged, same_as = list(found), squawk_same_as()
    for v in violations:
        code = f"squawk:{v.rule}"
        same = [i for i, f in enumerate(merged) if f.code in same_as.get(v.rule, ()) and f.source != "squawk"
                and (f.blocking or not v.blocking)]
        if same:
            first = merged[same[0]]
            if code not in first.agreed:
                merged[same[0]] = replace(first, agreed=(*first.agreed, code))
            continue
        merged.append(finding(code, label, f"{v.message} — {v.statement}", "squawk", v.blocking, fix=v.fix))
    return merged


def _squawk_findings(connection: BaseDatabaseWrapper, ours: _Ours, label: str, sql: str,
                     found: list[Problem]) -> list[Problem]:
    try:
        violations = squawk.judge_sql(connection, sql, ours)
    except SquawkError as exc:
        detail = f"{exc}: squawk did not judge the PostgreSQL SQL of this migration"
        return [*found, finding("SQUAWK_FAILED", label, detail, "squawk", fix=squawk.FIXES["SQUAWK_FAILED"])]
    return merge_squawk(found, violations, label)


def _not_collected(label: str, operation: Operation, error: str, after_earlier: bool) -> Problem:
    """An operation whose SQL could not be collected: a note when an earlier migration of the plan changes what
    it introspects (ours judged it); blocking when the live database is what it will meet."""
    name = operation.describe()
    if after_earlier:
        detail = (f"the SQL of '{name}' cannot be built before the earlier migrations of this plan have run "
                  f"({error}); judged from the operation and the migration state, not by the SQL judges")
        return finding("SQL_NOT_COLLECTED", label, detail, "songsgen", blocking=False)
    detail = (f"the SQL of '{name}' cannot be built against this database ({error}); applying it would "
              "most likely fail the same way")
    return finding("SQL_NOT_COLLECTED", label, detail, "songsgen")


def _model_key(app_label: str, op: Operation) -> tuple[str, str] | None:
    """The model an operation changes; None for one that may change anything (RunSQL, custom operations)."""
    if isinstance(op, ops.RunPython):
        return (app_label, "")
    name = getattr(op, "model_name", None) or getattr(op, "name", None)
    known = isinstance(op, ops.models.ModelOperation | ops.fields.FieldOperation | ops.models.IndexOperation)
    return (app_label, name.lower()) if known and isinstance(name, str) else None


def _depends_on(earlier: set[tuple[str, str] | None], app_label: str, op: Operation) -> bool:
    """Whether an earlier migration of the plan may have changed what `op` finds in the database."""
    key = _model_key(app_label, op)
    return None in earlier or (key in earlier if key else bool(earlier))


class _Plan:
    """One plan's judges: ours (with the migration state), the linter, squawk; a migration at a time."""

    def __init__(self, connection: BaseDatabaseWrapper, state: ProjectState, use_linter: bool,
                 use_squawk: bool, safe: AbstractSet[str] = frozenset()) -> None:
        self.connection = connection
        self.safe = safe  # PostgreSQL: the migrations run with safe DDL (their statements rewritten)
        self.rows = TableRows(connection, big_table_rows())
        self.checker = OperationChecker(connection, state, self.rows.big)
        self.ours = _Ours(self.rows, self.checker.widened)
        self.use_linter = use_linter
        self.use_squawk = use_squawk and connection.vendor == "postgresql"
        self.squawk_missing = self.use_squawk and squawk.binary() is None
        self.touched: set[tuple[str, str] | None] = set()  # by the earlier migrations of the plan

    def judge(self, migration: Migration, before: ProjectState) -> tuple[list[Problem], bool]:
        """The findings on one migration (the state moves past it; `before` is a copy of the state before it),
        and whether its SQL was due for judging."""
        label = f"{migration.app_label}.{migration.name}"
        checker, earlier = self.checker, self.touched
        self.touched = earlier | {_model_key(migration.app_label, op) for op in migration.operations}
        touched = {
            (migration.app_label, (getattr(op, "model_name", None) or getattr(op, "name", "") or "").lower())
            for op in migration.operations
        }
        new = {(migration.app_label, op.name_lower) for op in migration.operations if isinstance(op, ops.CreateModel)}
        # The SQL judges see SQL alone: they cannot know that a table was created earlier in this same
        # plan (nothing running uses it yet); Django's own apps are not ours to judge.
        judged = not touched <= checker.created | new and migration.app_label not in DJANGO_APPS_WITH_MIGRATIONS
        use_squawk = self.use_squawk and not self.squawk_missing
        checker.widened.clear()
        own = [finding(code, label, detail, "songsgen")
               for op in migration.operations for code, detail in checker.check(migration.app_label, op)]
        if label in self.safe:
            own = [applied_safely(f) for f in own]
        if not judged or not (self.use_linter or use_squawk):
            return own, judged
        # Both SQL judges read the same SQL, collected once.
        collected = squawk.collect(self.connection, migration, before, safe_forms=label in self.safe)
        own += [_not_collected(label, op, error, _depends_on(earlier, migration.app_label, op))
                for op, error in collected.skipped]
        if self.use_linter:
            seen = {f.code for f in own}
            own += [f for f in linter_findings(self.connection, migration, collected.sql, self.ours)
                    if f.code not in seen]
        if use_squawk:
            own = _squawk_findings(self.connection, self.ours, label, collected.sql, own)
        return own, judged


# PostgreSQL: what our schema editor runs instead (songsgen.db.migrate.safeddl), and the cases it leaves alone.
SAFE_FORMS = {
    "INDEX_NOT_CONCURRENT": "CREATE INDEX CONCURRENTLY",
    "CONSTRAINT_NOT_VALID": "ADD CONSTRAINT … NOT VALID, then VALIDATE CONSTRAINT",
    "ADD_UNIQUE": "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … UNIQUE USING INDEX",
    "NOT_NULL": "CHECK (… IS NOT NULL) NOT VALID, VALIDATE, SET NOT NULL, the CHECK dropped",
}
NO_SAFE_FORM = ("adds NOT NULL column", "adds unique column", "re-creates the foreign key")


def applied_safely(found: Problem) -> Problem:
    """A finding our PostgreSQL schema editor answers by running the statement's safe form: a note, not a refusal."""
    form = SAFE_FORMS.get(found.code)
    if form is None or not found.blocking or found.detail.startswith(NO_SAFE_FORM):
        return found
    return replace(found, blocking=False, detail=f"applied safely ({form}): {found.detail}")


def _check_failed(label: str, detail: str) -> Problem:
    return finding("CHECK_FAILED", label, detail, "songsgen")


def check_plan(
    connection: BaseDatabaseWrapper,
    plan: list[tuple[Migration, bool]],
    state: ProjectState,
    *,
    use_linter: bool = True,
    use_squawk: bool = True,
) -> list[Problem]:
    """Findings for every operation of the plan; `state` is the project state before the plan (moved along).

    Nothing a migration holds can crash the check: whatever fails while one migration is judged becomes a
    blocking CHECK_FAILED finding naming it, and the next migrations are judged from the state after it."""
    safe: AbstractSet[str] = frozenset()
    if connection.vendor == "postgresql":
        from songsgen.db.migrate.online.plan import online_migrations, threshold

        safe = set(online_migrations(connection, plan, state, threshold(connection))[0])
    judges = _Plan(connection, state, use_linter, use_squawk, safe)
    findings: list[Problem] = []
    told = False
    for index, (migration, backwards) in enumerate(plan):
        label = f"{migration.app_label}.{migration.name}"
        if backwards:
            findings.append(finding("BACKWARDS", label, "unapplies this migration", "songsgen"))
            continue
        before = judges.checker.state.clone()
        try:
            own, judged = judges.judge(migration, before)
        except Exception as exc:  # a crash of the check is a finding about the migration, never a traceback
            own, judged = [_check_failed(label, f"the safety check could not judge it ({type(exc).__name__}: "
                                                f"{exc}); review it by hand")], False
            try:
                judges.checker.state = migration.mutate_state(before)
            except Exception as exc:
                findings += [*own, *(_check_failed(f"{m.app_label}.{m.name}", f"not judged: the migration state "
                                                   f"cannot be built past {label} ({type(exc).__name__}: {exc})")
                                     for m, _ in plan[index + 1:])]
                break
        if judged and judges.squawk_missing and not told:
            told = True  # once for the plan, at the first migration squawk should have judged
            own.append(finding("SQUAWK_MISSING", label, "squawk is not installed, so no migration's PostgreSQL SQL "
                               "was judged by it", "squawk", fix=squawk.FIXES["SQUAWK_MISSING"]))
        findings.extend(own)
    return findings
