"""Safety checks on the pending migrations, before anything runs (`migrate --check-safety`).

Three judges, merged per migration:

- django-migration-linter, on the SQL `sqlmigrate` would run (it knows vendor-specific SQL, RunSQL text and
  RunPython conventions). A migration holding its `IgnoreMigration()` operation is skipped, as the linter
  documents.
- Our own checks on the operations and the migration state, for what the linter cannot see from SQL alone:
  whether a table already exists and how big it is, whether a column type really changes, and on PostgreSQL
  which operations hold long exclusive locks.
- On PostgreSQL, squawk on the same SQL (`songsgen/db/squawk.py`, configured by `.squawk.toml`). Where it
  says what ours or the linter already said for the migration, that finding is kept once, marked as agreed.

Every finding carries the fix. Unsafe findings stop `migrate` unless `--allow-unsafe`.
"""

from __future__ import annotations

import re
from dataclasses import replace

from django.conf import settings
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations import operations as ops
from django.db.migrations.migration import Migration
from django.db.migrations.state import ProjectState
from django.db.models.constraints import BaseConstraint
from django_migration_linter.constants import DJANGO_APPS_WITH_MIGRATIONS

from songsgen.db import squawk
from songsgen.db.problems import Problem

FIXES = {
    "DROP_COLUMN": "Stop using the field in code and deploy that first; drop it in a later release "
    "(or keep the column and remove the field with SeparateDatabaseAndState).",
    "DROP_TABLE": "Deploy code that no longer uses the model first; drop the table in a later release.",
    "RENAME_COLUMN": "Add a new column, backfill it, switch the code, then drop the old one "
    "(or keep the column name with db_column).",
    "RENAME_TABLE": "Keep the table name with Meta.db_table, or copy into a new table across releases.",
    "NOT_NULL": "Add the column as null=True or with db_default=…, backfill it, and make it NOT NULL "
    "in a later migration.",
    "ADD_UNIQUE": "Deduplicate first; on PostgreSQL build a unique index CONCURRENTLY and attach it.",
    "INDEX_NOT_CONCURRENT": "Use django.contrib.postgres.operations.AddIndexConcurrently in a migration "
    "with atomic = False.",
    "CONSTRAINT_NOT_VALID": "Use django.contrib.postgres.operations.AddConstraintNotValid, then "
    "ValidateConstraint in a later migration.",
    "COLUMN_TYPE_REWRITE": "Add a column of the new type, backfill it in batches, switch over, drop the old one.",
    "BACKWARDS": "Unapplying migrations drops what they created; be sure the data is not needed.",
}


LINTER_FIX = "See the django-migration-linter documentation for this check."


def finding(code: str, migration: str, detail: str, source: str, blocking: bool = True, fix: str = "") -> Problem:
    """One unsafe (or noteworthy) operation in a pending migration; the fix by its code unless given."""
    return Problem(code, migration, detail, blocking, fix or FIXES.get(code, LINTER_FIX), source)


def finding_line(found: Problem) -> str:
    """A finding as migrate prints it: UNSAFE (or note), code and migration, and the fix beneath."""
    level = "UNSAFE" if found.blocking else "note"
    agreed = f" (also {', '.join(found.agreed)})" if found.agreed else ""
    return f"{level} {found.code} in {found.subject}: {found.detail}{agreed}\n    fix: {found.fix}"


def finding_dict(found: Problem) -> dict[str, object]:
    """A finding in `migrate --json`'s findings[], under the keys scripts read (`migration` is the subject)."""
    return {"code": found.code, "migration": found.subject, "detail": found.detail, "source": found.source,
            "blocking": found.blocking, "agreed": list(found.agreed), "fix": found.fix}


def big_table_rows() -> int:
    """Rows from which a table counts as big (locks and unique checks matter)."""
    return int(getattr(settings, "MIGRATE_BIG_TABLE_ROWS", 100_000))


def table_rows_at_least(connection: BaseDatabaseWrapper, table: str, limit: int) -> bool:
    """Whether `table` exists and holds at least `limit` rows (bounded: never counts past `limit`)."""
    if limit <= 0:
        return True
    with connection.cursor() as cursor:
        if table not in connection.introspection.table_names(cursor):
            return False
        if connection.vendor == "postgresql":
            cursor.execute("SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                           [connection.ops.quote_name(table)])
            row = cursor.fetchone()
            if row and row[0] >= limit:
                return True
        quoted = connection.ops.quote_name(table)
        cursor.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {quoted} LIMIT {int(limit)}) AS bounded")
        return cursor.fetchone()[0] >= limit


def _varchar_len(db_type: str | None) -> int | None:
    match = re.fullmatch(r"(?:varchar|character varying)\((\d+)\)", (db_type or "").lower())
    return int(match.group(1)) if match else None


def _type_change_rewrites(old: str | None, new: str | None) -> bool:
    if old == new:
        return False
    old_len, new_len = _varchar_len(old), _varchar_len(new)
    if old_len is not None and (new == "text" or (new_len is not None and new_len >= old_len)):
        return False  # PostgreSQL widens varchar, or turns it into text, without a rewrite
    return True


class _Checker:
    def __init__(self, connection: BaseDatabaseWrapper, state: ProjectState) -> None:
        self.connection = connection
        self.state = state
        self.created: set[tuple[str, str]] = set()
        self.pg = connection.vendor == "postgresql"
        self.limit = big_table_rows()

    def _table(self, app_label: str, model_name: str) -> str:
        return self.state.apps.get_model(app_label, model_name)._meta.db_table

    def _existing(self, app_label: str, model_name: str) -> bool:
        return (app_label, model_name.lower()) not in self.created

    def _big(self, app_label: str, model_name: str) -> bool:
        return self._existing(app_label, model_name) and table_rows_at_least(
            self.connection, self._table(app_label, model_name), self.limit
        )

    def check(self, app_label: str, op: ops.base.Operation) -> list[tuple[str, str]]:
        """(code, detail) pairs for one operation, judged against the state before it."""
        from django.contrib.postgres.operations import AddConstraintNotValid, AddIndexConcurrently

        found: list[tuple[str, str]] = []
        if isinstance(op, ops.CreateModel):
            self.created.add((app_label, op.name_lower))
        elif isinstance(op, ops.DeleteModel):
            found.append(("DROP_TABLE", f"drops table {self._table(app_label, op.name)}"))
        elif isinstance(op, ops.RenameModel):
            found.append(("RENAME_TABLE", f"renames model {op.old_name} to {op.new_name}"))
        elif isinstance(op, ops.AlterModelTable):
            found.append(("RENAME_TABLE", f"renames the table of {op.name} to {op.table}"))
        elif isinstance(op, ops.RemoveField) and self._existing(app_label, op.model_name):
            found.append(("DROP_COLUMN", f"drops column {op.model_name}.{op.name}"))
        elif isinstance(op, ops.RenameField) and self._existing(app_label, op.model_name):
            found.append(("RENAME_COLUMN", f"renames {op.model_name}.{op.old_name} to {op.new_name}"))
        elif isinstance(op, ops.AddField) and self._existing(app_label, op.model_name):
            field = op.field
            if not field.null and field.db_default is models.NOT_PROVIDED and not field.many_to_many:
                found.append(("NOT_NULL", f"adds NOT NULL column {op.model_name}.{op.name} without db_default"))
            if field.unique and self._big(app_label, op.model_name):
                found.append(("ADD_UNIQUE", f"adds unique column {op.model_name}.{op.name} to a big table"))
            # Field.db_index is set in Field.__init__ but missing from django-stubs.
            indexed = field.db_index or field.unique  # type: ignore[attr-defined]
            if self.pg and indexed and self._big(app_label, op.model_name):
                found.append(("INDEX_NOT_CONCURRENT", f"indexes new column {op.model_name}.{op.name} under lock"))
            if self.pg and field.remote_field is not None and getattr(field, "db_constraint", False) \
                    and self._big(app_label, op.model_name):
                found.append(("CONSTRAINT_NOT_VALID", f"adds a validated foreign key {op.model_name}.{op.name}"))
        elif isinstance(op, ops.AlterField) and self._existing(app_label, op.model_name):
            old = self.state.apps.get_model(app_label, op.model_name)._meta.get_field(op.name)
            new = op.field.clone()  # type: ignore[attr-defined]  # Field.clone(): missing from django-stubs
            new.set_attributes_from_name(op.name)
            new.model = old.model
            if old.null and not new.null:
                found.append(("NOT_NULL", f"makes {op.model_name}.{op.name} NOT NULL"))
            if new.unique and not old.unique and self._big(app_label, op.model_name):
                found.append(("ADD_UNIQUE", f"makes {op.model_name}.{op.name} unique on a big table"))
            if self.pg and _type_change_rewrites(old.db_type(self.connection), new.db_type(self.connection)) \
                    and self._big(app_label, op.model_name):
                found.append((
                    "COLUMN_TYPE_REWRITE",
                    f"changes {op.model_name}.{op.name} from {old.db_type(self.connection)} to "
                    f"{new.db_type(self.connection)}: the table is rewritten under an exclusive lock",
                ))
        elif isinstance(op, ops.AddConstraint):
            # AddConstraint's model_name and constraint are set in its __init__ but missing from django-stubs.
            model_name: str = op.model_name  # type: ignore[attr-defined]
            constraint: BaseConstraint = op.constraint  # type: ignore[attr-defined]
            big = self._big(app_label, model_name)  # False for a model created in this plan
            if isinstance(constraint, models.UniqueConstraint) and big:
                found.append(("ADD_UNIQUE", f"adds unique constraint {constraint.name} on a big table"))
            elif self.pg and big and not isinstance(op, AddConstraintNotValid):
                found.append(("CONSTRAINT_NOT_VALID", f"adds constraint {constraint.name} validated under lock"))
        elif isinstance(op, ops.AlterUniqueTogether) and self._big(app_label, op.name):
            found.append(("ADD_UNIQUE", f"changes unique_together of {op.name} on a big table"))
        elif isinstance(op, ops.AddIndex) and not isinstance(op, AddIndexConcurrently):
            if self.pg and self._big(app_label, op.model_name):
                found.append(("INDEX_NOT_CONCURRENT", f"builds index {op.index.name} without CONCURRENTLY"))
        return found


def linter_findings(connection: BaseDatabaseWrapper, migration: Migration, sql: str) -> list[Problem]:
    """django-migration-linter's findings for one migration, in our shape (the first judge beside ours).

    It reads `sql`, what `sqlmigrate` prints, as `squawk.migration_sql` collects it: without the write lock
    Django's `sqlmigrate` takes on SQLite (squawk.collecting_only)."""
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
        findings.append(finding(issue.code, label, detail, "django-migration-linter", blocking))
    return findings


def merge_squawk(found: list[Problem], violations: list[squawk.Violation], label: str) -> list[Problem]:
    """`found` (ours and the linter's for one migration) with squawk's added; a problem said twice is kept once."""
    merged = list(found)
    for v in violations:
        code = f"squawk:{v.rule}"
        same = [i for i, f in enumerate(merged) if f.code in squawk.SAME_AS.get(v.rule, ()) and f.source != "squawk"
                and (f.blocking or not v.blocking)]
        if same:
            first = merged[same[0]]
            if code not in first.agreed:
                merged[same[0]] = replace(first, agreed=(*first.agreed, code))
            continue
        merged.append(finding(code, label, f"{v.message} — {v.statement}", "squawk", v.blocking, fix=v.fix))
    return merged


def _squawk_findings(checker: _Checker, migration: Migration, sql: str, found: list[Problem]) -> list[Problem]:
    label = f"{migration.app_label}.{migration.name}"
    try:
        violations = squawk.judge_sql(checker.connection, sql,
                                      lambda table: table_rows_at_least(checker.connection, table, checker.limit))
    except squawk.SquawkError as exc:
        detail = f"{exc}: squawk did not judge the PostgreSQL SQL of this migration"
        return [*found, finding("SQUAWK_FAILED", label, detail, "squawk", fix=squawk.FIXES["SQUAWK_FAILED"])]
    return merge_squawk(found, violations, label)


def check_plan(
    connection: BaseDatabaseWrapper,
    plan: list[tuple[Migration, bool]],
    state: ProjectState,
    *,
    use_linter: bool = True,
    use_squawk: bool = True,
) -> list[Problem]:
    """Findings for every operation of the plan; `state` is the project state before the plan (mutated)."""
    checker = _Checker(connection, state)
    findings: list[Problem] = []
    use_squawk = use_squawk and checker.pg
    missing, told = use_squawk and squawk.binary() is None, False
    for migration, backwards in plan:
        label = f"{migration.app_label}.{migration.name}"
        if backwards:
            findings.append(finding("BACKWARDS", label, "unapplies this migration", "songsgen"))
            continue
        touched = {
            (migration.app_label, (getattr(op, "model_name", None) or getattr(op, "name", "") or "").lower())
            for op in migration.operations
        }
        new = {(migration.app_label, op.name_lower) for op in migration.operations if isinstance(op, ops.CreateModel)}
        # The SQL judges see SQL alone: they cannot know that a table was created earlier in this same
        # plan (nothing running uses it yet); Django's own apps are not ours to judge.
        judged = not touched <= checker.created | new and migration.app_label not in DJANGO_APPS_WITH_MIGRATIONS
        before = state.clone() if judged and (use_linter or use_squawk and not missing) else None
        own: list[Problem] = []
        for op in migration.operations:
            for code, detail in checker.check(migration.app_label, op):
                own.append(finding(code, label, detail, "songsgen"))
            op.state_forwards(migration.app_label, state)
        # Both SQL judges read the same SQL, collected once.
        sql = squawk.migration_sql(connection, migration, before) if before is not None else ""
        if use_linter and before is not None:
            seen = {f.code for f in own}
            own.extend(f for f in linter_findings(connection, migration, sql) if f.code not in seen)
        if before is not None and use_squawk and not missing:
            own = _squawk_findings(checker, migration, sql, own)
        elif judged and missing and not told:
            told = True  # once for the plan, at the first migration squawk should have judged
            own.append(finding("SQUAWK_MISSING", label, "squawk is not installed, so no migration's PostgreSQL SQL "
                               "was judged by it", "squawk", fix=squawk.FIXES["SQUAWK_MISSING"]))
        findings.extend(own)
    return findings
