"""A safety rule is one registered object (code, detector, fix, squawk equivalents); nothing else lists it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection, models
from django.db.migrations import Migration, operations
from django.db.migrations.executor import MigrationExecutor

from songsgen.db.migrate.safety import squawk
from songsgen.db.migrate.safety.check import FIXES, check_plan, finding, merge_squawk
from songsgen.db.migrate.safety.rules import RULES, Change, rule, squawk_same_as, squawk_size_sensitive

# What squawk.py listed by hand before the rules carried it: the registry keeps every one of them.
SAME_AS = {
    "require-concurrent-index-creation": {"INDEX_NOT_CONCURRENT", "CREATE_INDEX"},
    "require-concurrent-index-deletion": {"DROP_INDEX"},
    "adding-required-field": {"NOT_NULL"},
    "adding-not-nullable-field": {"NOT_NULL"},
    "ban-drop-default": {"NOT_NULL"},
    "ban-drop-column": {"DROP_COLUMN"},
    "ban-drop-table": {"DROP_TABLE"},
    "renaming-column": {"RENAME_COLUMN"},
    "renaming-table": {"RENAME_TABLE"},
    "disallowed-unique-constraint": {"ADD_UNIQUE"},
    "constraint-missing-not-valid": {"CONSTRAINT_NOT_VALID", "ADD_UNIQUE"},
    "adding-field-with-default": {"TABLE_REWRITE"},
    "adding-foreign-key-constraint": {"CONSTRAINT_NOT_VALID"},
    "changing-column-type": {"COLUMN_TYPE_REWRITE", "ALTER_COLUMN"},
}
SIZE_SENSITIVE = {
    "require-concurrent-index-creation", "disallowed-unique-constraint", "constraint-missing-not-valid",
    "adding-foreign-key-constraint", "changing-column-type", "adding-not-nullable-field", "adding-field-with-default",
}


def test_every_rule_has_a_code_a_fix_and_a_detector():
    # The order is the order of one operation's findings; a new rule comes after these.
    assert list(RULES)[:10] == ["DROP_COLUMN", "DROP_TABLE", "RENAME_TABLE", "RENAME_COLUMN", "NOT_NULL", "ADD_UNIQUE",
                           "INDEX_NOT_CONCURRENT", "CONSTRAINT_NOT_VALID", "COLUMN_TYPE_REWRITE", "TABLE_REWRITE"]
    for code, found in RULES.items():
        assert found.code == code and code.isupper()
        assert callable(found.detect)
        assert found.fix.strip() and FIXES[code] == found.fix
        assert finding(code, "songs.0009_x", "a detail", "songsgen").fix == found.fix


def test_squawks_equivalences_come_from_the_rules():
    same_as = squawk_same_as()
    assert all(codes <= same_as[name] for name, codes in SAME_AS.items())
    assert SIZE_SENSITIVE <= squawk_size_sensitive()
    for found in RULES.values():
        assert all(found.code in same_as[name] for name in (*found.squawk, *found.squawk_scans))


def test_a_half_registered_rule_is_refused():
    with pytest.raises(ValueError, match="needs a code and a fix"):
        rule("PROBE_NO_FIX", fix=" ")(lambda change: [])
    with pytest.raises(ValueError, match="DROP_COLUMN is registered twice"):
        rule("DROP_COLUMN", fix="another fix")(lambda change: [])
    assert "PROBE_NO_FIX" not in RULES and RULES["DROP_COLUMN"].fix != "another fix"


@pytest.fixture
def probe_rule() -> Iterator[None]:
    """A rule added the documented way: one decorated function."""
    @rule("PROBE_NEW_COLUMN", fix="Probe fix.", size_sensitive=True, squawk=("probe-rule",))
    def new_column(change: Change) -> list[str]:
        return [f"adds column {change.added.column}"] if change.added is not None else []

    yield
    del RULES["PROBE_NEW_COLUMN"]


class _Small:
    def small(self, table: str) -> str | None:
        return f"{table} is small"

    def widening(self, table: str, column: str) -> str | None:
        return None


@pytest.mark.django_db
def test_a_rule_registered_in_one_place_is_judged_fixed_and_merged_with_squawk(probe_rule):
    migration = Migration("0999_probe", "songs")
    migration.operations = [operations.AddField("song", "mood", models.CharField(max_length=9, null=True))]
    state = MigrationExecutor(connection)._create_project_state(with_applied_migrations=True)
    found = check_plan(connection, [(migration, False)], state, use_linter=False, use_squawk=False)
    assert [(f.code, f.detail, f.fix, f.blocking) for f in found] == [
        ("PROBE_NEW_COLUMN", "adds column mood", "Probe fix.", True)]
    statement = 'ALTER TABLE "songs_song" ADD COLUMN "mood" varchar(9) NULL;'
    merged = merge_squawk(found, [squawk.Violation("probe-rule", "said by squawk", "", statement, True)],
                          "songs.0999_probe")
    assert [(f.code, f.agreed) for f in merged] == [("PROBE_NEW_COLUMN", ("squawk:probe-rule",))]
    assert squawk._overruled("probe-rule", statement, _Small()) == "songs_song is small"
