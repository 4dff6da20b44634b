"""PostgreSQL: Django's one UPDATE that fills a column's NULLs before NOT NULL, run in batches of pages on a big
table (each its own transaction), every NULL filled, rows written meanwhile too."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import override_settings

from songsgen.db.migrate import observe

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="safe DDL is PostgreSQL's")
TABLE = "safe_ddl_backfill_t"


@pytest.mark.django_db(transaction=True)
def test_the_nulls_are_filled_in_batches_of_pages():
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, c integer NULL, pad text)")
        cursor.execute(f"INSERT INTO {TABLE} SELECT g, CASE WHEN g % 3 = 0 THEN g END, repeat('x', 200) "
                       "FROM generate_series(1, 60000) g")
        cursor.execute(f"ANALYZE {TABLE}")
    heard: list[dict] = []
    try:
        with override_settings(MIGRATE_BIG_TABLE_ROWS=1000), observe.listening(lambda d: heard.append(d.as_dict())):
            with connection.schema_editor(atomic=False) as editor:
                editor.execute(f'UPDATE "{TABLE}" SET "c" = %s WHERE "c" IS NULL', [7])
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FILTER (WHERE c IS NULL), count(*) FILTER (WHERE c = 7) FROM {TABLE}")
            assert cursor.fetchone() == (0, 40000)
        (done,) = heard
        assert done["kind"] == "backfill" and done["table"] == TABLE
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_update_is_djangos():
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, c integer NULL)")
        cursor.execute(f"INSERT INTO {TABLE} SELECT g, NULL FROM generate_series(1, 5000) g")
        cursor.execute(f"ANALYZE {TABLE}")
    heard: list[object] = []
    try:
        with override_settings(MIGRATE_BIG_TABLE_ROWS=1000), observe.listening(heard.append):
            with connection.schema_editor(atomic=True) as editor:
                editor.execute(f'UPDATE "{TABLE}" SET "c" = %s WHERE "c" IS NULL', [7])
        assert heard == []
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
