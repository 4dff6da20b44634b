"""Every field type and every operation kind Django has, through the whole safety check (ours, the linter, and
squawk on PostgreSQL) against a real table with rows: none may crash it, and each gets the verdict it deserves.

The table `songs_probe` is made for each test from a model state of the songs app holding one column of every
field class; each case is a pending migration (built in Python) judged by `check_plan`, as `migrate` runs it.
`test_migrate_check_safety_judges_a_real_app` runs `migrate --check-safety` itself on migration files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.postgres import fields as pg_fields
from django.contrib.postgres import operations as pg_ops
from django.contrib.postgres.search import SearchVectorField
from django.db import connection, models
from django.db.migrations import Migration, operations
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.state import ModelState, ProjectState

from songsgen.db.migrate.safety.check import check_plan
from tests.conftest import REPO
from tests.factories import make_user

PG = connection.vendor == "postgresql"
M = models
FK = {"to": "songs.song", "on_delete": M.CASCADE, "related_name": "+"}
REQUIRED: dict[type, dict[str, Any]] = {  # what each field class needs beyond null
    M.CharField: {"max_length": 20}, M.CommaSeparatedIntegerField: {"max_length": 20},
    M.DecimalField: {"max_digits": 9, "decimal_places": 2}, M.FilePathField: {"path": "/tmp"},
    M.ForeignKey: FK, M.OneToOneField: FK, M.ManyToManyField: {"to": "songs.song", "related_name": "+"},
    M.GeneratedField: {"expression": M.F("n") + 1, "output_field": M.IntegerField(), "db_persist": True},
    M.ForeignObject: {**FK, "from_fields": ["n"], "to_fields": ["id"]},
    pg_fields.ArrayField: {"base_field": M.IntegerField()}, pg_fields.CICharField: {"max_length": 20},
}
# Field classes that are not a column of their own: each has its own case below.
NOT_A_COLUMN = {M.Field, M.AutoField, M.BigAutoField, M.SmallAutoField, M.CompositePrimaryKey, M.OrderWrt}


def _classes(module: Any) -> set[type]:
    return {c for c in vars(module).values() if isinstance(c, type) and issubclass(c, M.Field)}


FIELD_CLASSES = sorted(_classes(M) - NOT_A_COLUMN, key=lambda c: c.__name__)
PG_CLASSES = sorted(_classes(pg_fields) - _classes(M) - {pg_fields.RangeField}, key=lambda c: c.__name__)
ALL_CLASSES = FIELD_CLASSES + PG_CLASSES + [SearchVectorField]


def _field(cls: type, null: bool = True, **extra: Any) -> M.Field:
    kwargs = {**REQUIRED.get(cls, {}), **extra}
    if cls not in (M.ManyToManyField, M.GeneratedField, M.ForeignObject):
        kwargs["null"] = null
    return cls(**kwargs)


def _column(cls: type) -> str:
    return f"c_{cls.__name__.lower()}"


def _probe_state(classes: list[type]) -> ProjectState:
    state = MigrationExecutor(connection)._create_project_state(with_applied_migrations=True)
    fields = [("id", M.BigAutoField(primary_key=True)), ("title", M.CharField(max_length=50, null=True)),
              ("n", M.IntegerField(null=True))] + [(_column(c), _field(c)) for c in classes]
    state.add_model(ModelState("songs", "Probe", fields, {
        "indexes": [M.Index(fields=["n"], name="probe_n_idx")],
        "constraints": [M.CheckConstraint(condition=M.Q(n__gte=0), name="probe_n_check")],
    }))
    return state


@pytest.fixture
def probe(transactional_db, settings) -> Iterator[Callable[..., dict[str, set[str]]]]:
    """A real songs_probe table (3 rows, a column of every field class); judge(plan) → blocking codes by
    migration. `big=True` makes it count as big."""
    classes = [c for c in ALL_CLASSES if PG or c not in PG_CLASSES and c is not SearchVectorField]
    if PG:
        with connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS hstore; CREATE EXTENSION IF NOT EXISTS citext")
    state = _probe_state(classes)
    model = state.apps.get_model("songs", "Probe")
    with connection.schema_editor() as editor:
        editor.create_model(model)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO songs_probe (title, n) VALUES ('a', 1), ('b', 2), ('c', 3)")

    def judge(*migrations: list, big: bool = False) -> dict[str, set[str]]:
        settings.MIGRATE_BIG_TABLE_ROWS = 2 if big else 100_000
        plan = []
        for number, ops in enumerate(migrations, start=901):
            migration = Migration(f"0{number}_case", "songs")
            migration.operations = list(ops)
            migration.atomic = not any(isinstance(op, pg_ops.NotInTransactionMixin) for op in ops)
            plan.append((migration, False))
        found = check_plan(connection, plan, _probe_state(classes))
        return {m.name: {f.code for f in found if f.blocking and f.subject == f"songs.{m.name}"} for m, _ in plan}

    try:
        yield judge
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(model)


def test_every_field_class_has_a_case():
    """A new field class in Django gets a case here, or a reason in NOT_A_COLUMN."""
    assert {M.CharField, M.ForeignKey, M.OneToOneField, M.ManyToManyField, M.GeneratedField, M.JSONField,
            M.ForeignObject} <= set(FIELD_CLASSES)
    assert {pg_fields.ArrayField, pg_fields.HStoreField, pg_fields.IntegerRangeField} <= set(PG_CLASSES)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_field_class_through_every_field_operation(cls, probe):
    if not PG and (cls in PG_CLASSES or cls is SearchVectorField):
        pytest.skip("a PostgreSQL field")
    column, many, virtual = _column(cls), cls is M.ManyToManyField, cls is M.ForeignObject
    generated = cls is M.GeneratedField or cls is M.NullBooleanField  # computed, or always nullable
    tighten = [] if generated else [operations.AlterField("probe", column, _field(cls, null=False))]
    found = probe(
        [operations.AddField("probe", "x_new", _field(cls))],
        [operations.AlterField("probe", column, _field(cls, help_text="only the state changes"))],
        tighten,
        [operations.RenameField("probe", column, "renamed")],
        [operations.RemoveField("probe", "renamed")],
        [operations.AddField("probe", "x_required", _field(cls, null=False))],
    )
    column_kind = set() if virtual else {"RENAME_TABLE"} if many else {"RENAME_COLUMN"}
    assert found == {
        "0901_case": set(),
        "0902_case": set(),
        "0903_case": set() if many or virtual or generated else {"NOT_NULL"},
        "0904_case": column_kind,
        "0905_case": set() if virtual else {"DROP_TABLE"} if many else {"DROP_COLUMN"},
        "0906_case": set() if many or virtual or generated else {"NOT_NULL"},
    }


def test_changing_a_generated_column_is_refused_by_the_sql_it_cannot_build(probe):
    """Django cannot alter a GeneratedField: the first migration of a plan meets the live database, so blocking."""
    changed = _field(M.GeneratedField, expression=M.F("n") + 2)
    assert probe([operations.AlterField("probe", _column(M.GeneratedField), changed)]) == {
        "0901_case": {"SQL_NOT_COLLECTED"}}


def _op_cases() -> list[tuple[str, Callable[[], list], set[str], set[str]]]:
    """(name, operations, blocking codes on a small table, on a big one) for every operation kind."""
    check = M.CheckConstraint(condition=M.Q(n__gte=0), name="probe_n_check", violation_error_message="no")
    # PostgreSQL: a big table's index, CHECK, foreign key and unique constraint are applied in their safe forms
    # by our schema editor (songsgen.db.migrate.safeddl): notes, not refusals.
    unique = set() if PG else {"ADD_UNIQUE"}
    # The many-to-many table is renamed with its probe_id column: the linter reads PostgreSQL's RENAME COLUMN.
    renamed = {"RENAME_TABLE", "RENAME_COLUMN"} if PG else {"RENAME_TABLE"}
    cases: list[tuple[str, Callable[[], list], set[str], set[str]]] = [
        ("CreateModel", lambda: [operations.CreateModel("Other", [("id", M.AutoField(primary_key=True))])],
         set(), set()),
        ("CreateModel-small-pk", lambda: [operations.CreateModel("Other", [
            ("id", M.SmallAutoField(primary_key=True))])], set(), set()),
        ("CreateModel-composite-pk", lambda: [operations.CreateModel("Other", [
            ("pk", M.CompositePrimaryKey("a", "b")), ("a", M.IntegerField()), ("b", M.IntegerField())])],
         set(), set()),
        ("DeleteModel", lambda: [operations.DeleteModel("probe")], {"DROP_TABLE"}, {"DROP_TABLE"}),
        ("RenameModel", lambda: [operations.RenameModel("probe", "renamed")], renamed, renamed),
        # db_table kept: the table stays, but the many-to-many table's probe_id column is renamed.
        ("RenameModel-db_table", lambda: [operations.AlterModelTable("probe", "songs_probe"),
                                          operations.RenameModel("probe", "renamed")],
         {"RENAME_COLUMN"}, {"RENAME_COLUMN"}),
        ("AlterModelTable", lambda: [operations.AlterModelTable("probe", "songs_probe2")],
         {"RENAME_TABLE"}, {"RENAME_TABLE"}),
        ("AlterModelTableComment", lambda: [operations.AlterModelTableComment("probe", "probes")], set(), set()),
        ("AlterUniqueTogether", lambda: [operations.AlterUniqueTogether("probe", {("title", "n")})],
         set(), unique),
        ("AlterIndexTogether", lambda: [operations.AlterIndexTogether("probe", {("title", "n")})], set(), set()),
        ("AlterModelOptions", lambda: [operations.AlterModelOptions("probe", {"verbose_name": "p"})], set(), set()),
        ("AlterModelManagers", lambda: [operations.AlterModelManagers("probe", [("objects", M.Manager())])],
         set(), set()),
        ("AlterOrderWithRespectTo", lambda: [operations.AlterOrderWithRespectTo("probe", _column(M.ForeignKey))],
         {"NOT_NULL"}, {"NOT_NULL"}),
        ("AddIndex", lambda: [operations.AddIndex("probe", M.Index(fields=["title"], name="probe_title_idx"))],
         set(), set()),
        ("RemoveIndex", lambda: [operations.RemoveIndex("probe", "probe_n_idx")], set(), set()),
        ("RenameIndex", lambda: [operations.RenameIndex("probe", "probe_n_idx2", old_name="probe_n_idx")],
         set(), set()),
        ("AddConstraint-check", lambda: [operations.AddConstraint("probe", M.CheckConstraint(
            condition=M.Q(n__lt=10**6), name="probe_n_small"))], set(), set()),
        ("AddConstraint-unique", lambda: [operations.AddConstraint("probe", M.UniqueConstraint(
            fields=["title"], name="probe_title_uniq"))], set(), unique),
        ("RemoveConstraint", lambda: [operations.RemoveConstraint("probe", "probe_n_check")], set(), set()),
        ("AlterConstraint", lambda: [operations.AlterConstraint("probe", "probe_n_check", check)], set(), set()),
        ("AddField-foreign-key", lambda: [operations.AddField("probe", "song", M.ForeignKey(
            "songs.song", M.CASCADE, null=True, related_name="+"))],
         set(), set()),
        # Django drops and re-adds the foreign key to alter the column: no safe form for that; NOT NULL has one.
        ("AlterField-foreign-key-null", lambda: [operations.AlterField("probe", _column(M.ForeignKey), _field(
            M.ForeignKey, null=False))], {"NOT_NULL"}, {"CONSTRAINT_NOT_VALID"} if PG else {"NOT_NULL"}),
        ("AlterField-foreign-key-on-delete", lambda: [operations.AlterField("probe", _column(M.ForeignKey), _field(
            M.ForeignKey, on_delete=M.PROTECT))], set(), set()),
        ("AddField-generated", lambda: [operations.AddField("probe", "g", _field(M.GeneratedField))],
         set(), {"TABLE_REWRITE"} if PG else set()),
        ("AlterField-type", lambda: [operations.AlterField("probe", "n", M.BigIntegerField(null=True))],
         set(), {"COLUMN_TYPE_REWRITE", "ALTER_COLUMN"} if PG else set()),
        ("AlterField-widen", lambda: [operations.AlterField("probe", "title", M.CharField(max_length=90, null=True))],
         set(), set()),
        ("AlterField-primary-key", lambda: [operations.AlterField("probe", "id", M.AutoField(primary_key=True))],
         set(), {"COLUMN_TYPE_REWRITE", "ALTER_COLUMN"} if PG else set()),
        ("RunSQL", lambda: [operations.RunSQL("UPDATE songs_probe SET n = 1", "UPDATE songs_probe SET n = 2")],
         set(), set()),
        ("RunPython", lambda: [operations.RunPython(operations.RunPython.noop, operations.RunPython.noop)],
         set(), set()),
        ("SeparateDatabaseAndState-state", lambda: [operations.SeparateDatabaseAndState(
            state_operations=[operations.RemoveField("probe", "title")])], set(), set()),
        ("SeparateDatabaseAndState-database", lambda: [operations.SeparateDatabaseAndState(
            database_operations=[operations.RemoveField("probe", "title")])], {"DROP_COLUMN"}, {"DROP_COLUMN"}),
    ]
    if PG:
        cases += [
            ("AddIndexConcurrently", lambda: [pg_ops.AddIndexConcurrently(
                "probe", M.Index(fields=["title"], name="probe_title_idx"))], set(), set()),
            ("RemoveIndexConcurrently", lambda: [pg_ops.RemoveIndexConcurrently("probe", "probe_n_idx")],
             set(), set()),
            ("AddConstraintNotValid", lambda: [pg_ops.AddConstraintNotValid("probe", M.CheckConstraint(
                condition=M.Q(n__lt=10**6), name="probe_n_small"))], set(), set()),
            ("ValidateConstraint", lambda: [pg_ops.ValidateConstraint("probe", "probe_n_check")], set(), set()),
            ("CreateExtension", lambda: [pg_ops.BtreeGinExtension()], set(), set()),
            ("CreateCollation", lambda: [pg_ops.CreateCollation("probe_c", provider="icu", locale="und")],
             set(), set()),
            ("RemoveCollation", lambda: [pg_ops.RemoveCollation("probe_c", provider="icu", locale="und")],
             set(), set()),
        ]
    return cases


OP_CASES = _op_cases()


@pytest.mark.parametrize(("name", "ops", "small", "big"), OP_CASES, ids=[c[0] for c in OP_CASES])
def test_every_operation_kind_gets_its_verdict_on_a_small_and_a_big_table(name, ops, small, big, probe):
    assert probe(ops()) == {"0901_case": small}
    assert probe(ops(), big=True) == {"0901_case": big}


APP = {
    "0001_initial": """
        operations = [migrations.CreateModel("Thing", [
            ("id", models.BigAutoField(primary_key=True)), ("title", models.CharField(max_length=50)),
            ("kind", models.CharField(max_length=20)),
            ("owner", models.ForeignKey("accounts.user", on_delete=models.CASCADE)),
        ])]""",
    "0002_unique_together": """
        operations = [migrations.AlterUniqueTogether("thing", {("title", "kind")})]""",
    "0003_no_unique_together": """
        operations = [migrations.AlterUniqueTogether("thing", set())]""",
    "0004_owner_nullable": """
        operations = [migrations.AlterField("thing", "owner", models.ForeignKey(
            "accounts.user", null=True, on_delete=models.SET_NULL))]""",
    "0005_rating": """
        operations = [migrations.AddField("thing", "rating", models.IntegerField(db_default=None))]""",
}


def _write_app(root: Any) -> None:
    app = root / "probeapp"
    (app / "migrations").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "migrations" / "__init__.py").write_text("")
    previous = '("accounts", "0001_create_user")'
    for name, body in APP.items():
        (app / "migrations" / f"{name}.py").write_text(
            f"from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n"
            f"    dependencies = [{previous}]\n{textwrap.dedent(body).replace(chr(10), chr(10) + '    ')}\n")
        previous = f'("probeapp", "{name}")'
    (root / "probe_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n\nINSTALLED_APPS = [*INSTALLED_APPS, 'probeapp']  # noqa: F405\n")


def test_migrate_check_safety_judges_a_real_app(subprocess_env, tmp_path):
    """The linter's app_unique_together and a foreign key made nullable, as migration files: `migrate
    --check-safety` judges every migration (no traceback) and blocks only the NOT NULL column with
    db_default=None."""
    _write_app(tmp_path)
    env = dict(subprocess_env, DJANGO_SETTINGS_MODULE="probe_settings", PYTHONPATH=f"{REPO}:{tmp_path}",
               SONGSGEN_DATA_DIR=str(tmp_path / "data"))

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "manage.py"), *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)

    assert manage("migrate", "--plain", "probeapp", "0001").returncode == 0
    try:
        user = make_user()
        with connection.cursor() as cursor:
            for title in ("a", "b", "c"):
                cursor.execute("INSERT INTO probeapp_thing (title, kind, owner_id) VALUES (%s, 'x', %s)",
                               [title, user.pk])
        result = manage("migrate", "--check-safety", "--json")
    finally:
        manage("migrate", "--plain", "probeapp", "zero")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stdout + result.stderr
    findings = json.loads(result.stdout)["findings"]
    blocking = {(f["migration"], f["code"]) for f in findings if f["blocking"]}
    assert blocking == {("probeapp.0005_rating", "NOT_NULL")}
    notes = {(f["migration"], f["code"]) for f in findings if not f["blocking"]}
    assert ("probeapp.0003_no_unique_together", "SQL_NOT_COLLECTED") in notes
