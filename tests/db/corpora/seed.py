"""Apply a corpus app plainly up to a migration, then fill each of its tables to N rows:
`python -m tests.db.corpora.seed LABEL N [MIGRATION]` (settings: tests.db.corpora.settings). Prints the row
counts as JSON.

Values come from the migration state's fields (type, length, uniqueness, choices, foreign keys), so any
app's tables can be filled without knowing its models.
"""

from __future__ import annotations

import datetime
import decimal
import json
import sys
import uuid
from typing import Any

import django


def value(field: Any, i: int, targets: dict[str, list[Any]]) -> Any:
    """A value the field's column accepts for row i (distinct per row, so unique columns hold)."""
    from django.db import models

    if field.is_relation:
        key = f"{field.related_model._meta.label_lower}.{field.target_field.attname}"
        if key not in targets:
            manager = field.related_model._base_manager
            targets[key] = list(manager.values_list(field.target_field.attname, flat=True).order_by("pk"))
        pool = targets[key]
        if isinstance(field, models.OneToOneField):
            return pool[i] if i < len(pool) else None
        return pool[i % len(pool)] if pool else None
    if field.choices:
        return field.choices[i % len(field.choices)][0]
    kind = field.get_internal_type()
    if kind in ("IntegerField", "BigIntegerField", "PositiveIntegerField", "PositiveBigIntegerField"):
        return i + 1
    if kind in ("SmallIntegerField", "PositiveSmallIntegerField"):
        return i % 30000
    if kind == "BooleanField":
        return i % 2 == 0
    if kind in ("CharField", "TextField", "SlugField", "EmailField"):
        text = f"v{i}"
        return text[: field.max_length] if field.max_length else text
    if kind == "DateTimeField":
        return datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=i)
    if kind == "DateField":
        return datetime.date(2026, 1, 1) + datetime.timedelta(days=i % 3000)
    if kind == "DecimalField":
        return decimal.Decimal(i % 10 ** (field.max_digits - field.decimal_places - 1))
    if kind == "FloatField":
        return float(i)
    if kind == "UUIDField":
        return uuid.uuid4()
    if kind == "JSONField":
        return {"i": i}
    return field.get_default()


def seed(label: str, rows: int) -> dict[str, int]:
    """Fill every table of the app (parents first) to `rows` rows; return each table's count."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from songsgen.db.migrate.schema import applied_state

    state = applied_state(MigrationExecutor(connection))
    todo = [m for m in state.apps.get_models() if m._meta.app_label == label]
    targets: dict[str, list[Any]] = {}
    counts: dict[str, int] = {}
    done: set[str] = set()
    while todo:
        ready = [m for m in todo if all(
            f.related_model._meta.label_lower in done or f.related_model is m
            for f in m._meta.local_fields if f.is_relation)]
        model = ready[0]
        todo.remove(model)
        fields = [f for f in model._meta.local_fields
                  if not f.auto_created and not (f.is_relation and f.related_model is model)]
        have = model._base_manager.count()
        model._base_manager.bulk_create(
            [model(**{f.attname if f.is_relation else f.name: value(f, i, targets) for f in fields})
             for i in range(have, rows)],
            batch_size=500,
        )
        done.add(model._meta.label_lower)
        counts[model._meta.db_table] = model._base_manager.count()
    return counts


def main(argv: list[str]) -> int:
    django.setup()
    from django.core.management import call_command

    label, rows = argv[1], int(argv[2])
    if len(argv) > 3:
        call_command("migrate", label, argv[3], safe=False, verbosity=0)
    print(json.dumps(seed(label, rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
