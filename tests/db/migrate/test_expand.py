"""ExpandColumn, the expand step of a change no database makes in place, on a table with rows (both engines):
the new column backfilled, kept in step by its trigger on insert and update, and gone again backwards."""

from __future__ import annotations

import pytest
from django.db import connection, models
from django.db.migrations.state import ModelState, ProjectState

from songsgen.db.migrate.expand import ExpandColumn, FinishExpand

APP, TABLE = "expand_test", "expand_test_thing"


@pytest.fixture
def state():
    """A throwaway table with 300 rows (two of them without a size), and the state it is in."""
    state = ProjectState()
    state.add_model(ModelState(APP, "Thing", [("id", models.AutoField(primary_key=True)),
                                              ("size", models.IntegerField(null=True))]))
    with connection.schema_editor() as editor:
        editor.create_model(state.apps.get_model(APP, "Thing"))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {TABLE} (id, size) VALUES (%s, %s)",
                           [(i, None if i in (7, 8) else i) for i in range(1, 301)])
    yield state
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


def values() -> dict[int, tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, size, size_big FROM {TABLE} ORDER BY id")
        return {row[0]: row[1:] for row in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_the_new_column_is_backfilled_and_kept_in_step_until_finished(state):
    op = ExpandColumn("thing", "size_big", models.BigIntegerField(null=True), source="size",
                      expression="{source} * 1000")
    after = state.clone()
    op.state_forwards(APP, after)
    with connection.schema_editor(atomic=False) as editor:  # as in a migration with atomic = False
        op.database_forwards(APP, editor, state, after)
    rows = values()
    assert rows[5] == (5, 5000) and rows[7] == (None, None) and len(rows) == 300  # backfilled; NULL stays NULL

    with connection.cursor() as cursor:  # old code writes only `size`: the trigger keeps the new column in step
        cursor.execute(f"INSERT INTO {TABLE} (id, size) VALUES (1000, 3)")
        cursor.execute(f"UPDATE {TABLE} SET size = 9 WHERE id = 5")
    assert values()[1000] == (3, 3000) and values()[5] == (9, 9000)

    finish = FinishExpand("thing", "size_big", source="size", expression="{source} * 1000")
    with connection.schema_editor(atomic=False) as editor:
        finish.database_forwards(APP, editor, after, after)
    with connection.cursor() as cursor:  # new code writes the new column itself
        cursor.execute(f"UPDATE {TABLE} SET size = 1, size_big = 42 WHERE id = 5")
    assert values()[5] == (1, 42)

    with connection.schema_editor(atomic=False) as editor:
        finish.database_backwards(APP, editor, after, after)
        op.database_backwards(APP, editor, after, state)
    with connection.cursor() as cursor:
        columns = [c.name for c in connection.introspection.get_table_description(cursor, TABLE)]
        cursor.execute(f"INSERT INTO {TABLE} (id, size) VALUES (1001, 4)")  # no trigger left naming the column
    assert columns == ["id", "size"]


def test_the_new_column_must_be_nullable():
    with pytest.raises(ValueError, match="null=True"):
        ExpandColumn("thing", "size_big", models.BigIntegerField(), source="size")
