"""The corpus cases and the verdict and end state we expect of each, per engine (docs/migrations.md, "Corpora").

`unsafe` holds the blocking codes `--check-safety` must report (empty: safe). Where today's code fails a case
only because of a bug another branch of issue 22 fixes, the case is a strict xfail naming it, so the fix shows
as an XPASS.
"""

from __future__ import annotations

from tests.db.corpora.harness import Case

L, Z = "linter", "zerodowntime"
PG, SQLITE = "postgresql", "sqlite"

NO_LIB = "its migration imports django-add-default-value (AddDefaultValue), which songsgen does not depend on"

U = frozenset
CASES = [
    Case(L, "app_add_manytomany_field", "0001"),
    Case(L, "app_add_not_null_column", "0001", unsafe=U({"NOT_NULL"})),
    Case(L, "app_add_not_null_column_followed_by_default", "0001", skip=NO_LIB),
    Case(L, "app_alter_column", "0001"),
    Case(L, "app_alter_column_drop_not_null", "0001"),
    Case(L, "app_correct", "0001"),
    Case(L, "app_create_table_with_not_null_column", None),
    # 0002's RunPython has no reverse: back to zero fails, rolled back (exit 1), every row kept.
    Case(L, "app_data_migrations", "0001", zero_exit=1),
    # Reversing the drop re-adds a NOT NULL column without a default to 2,000 rows: fails, rolled back.
    Case(L, "app_drop_column", "0001", unsafe=U({"DROP_COLUMN"}), zero_exit=1),
    Case(L, "app_drop_table", "0001", unsafe=U({"DROP_TABLE"}), dropped=U({"app_drop_table_a"})),
    Case(L, "app_ignore_migration", "0001", unsafe=U({"NOT_NULL"})),
    Case(L, "app_make_not_null_with_django_default", "0001", unsafe=U({"NOT_NULL"})),
    Case(L, "app_make_not_null_with_lib_default", "0001", skip=NO_LIB),
    Case(L, "app_rename_column", "0001", unsafe=U({"RENAME_COLUMN"})),
    Case(L, "app_rename_table", "0001", unsafe=U({"RENAME_TABLE"}), dropped=U({"app_rename_table_a"})),
    Case(L, "app_unique_together", "0001"),
    # Our own DROP_COLUMN advice (0002, state only) then the drop of the table its column pointed at. On SQLite
    # the kept column still REFERENCES the dropped table: the drop must fail and leave every row.
    Case(Z, "good_flow_drop_table_with_constraints", "0001_initial", unsafe=U({"DROP_TABLE"}),
         dropped=U({"drop_tbl_main"}), engines={SQLITE: {"migrate_exit": 1}}),
    # PostgreSQL: the columns go (their forgotten index and constraint with them, CASCADE); back to zero fails
    # on the constraint the state still removes (rolled back). SQLite: the forgotten index stops DROP COLUMN.
    Case(Z, "good_flow_drop_column_with_constraints", "0001_initial", unsafe=U({"DROP_COLUMN"}),
         engines={PG: {"zero_exit": 1}, SQLITE: {"migrate_exit": 1}}),
    Case(Z, "idempotency_add_foreign_key_app", "0001_initial"),
    Case(Z, "alter_foreign_key_null", "0001_initial"),
    Case(Z, "good_flow_alter_table_with_same_db_table", "0001_initial"),
    Case(Z, "bad_flow_change_char_type_that_unsafe_app", "0001_initial"),
    Case(Z, "bad_rollback_flow_change_char_type_that_safe_app", "0001_initial"),
    Case(Z, "decimal_to_float_app", "0001_initial"),
    Case(Z, "good_flow_app", "0001_initial"),
]
