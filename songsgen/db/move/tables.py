"""Every table the project's code knows, from the app registry, in foreign-key dependency order.

Never a hard-coded list: a new model is transferred and compared without touching this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from django.apps import apps
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.recorder import MigrationRecorder

from songsgen.db.exceptions import DependencyCycle

# Rows that `migrate` writes by itself (post_migrate signals and the migration history).
# They are not user data: a freshly migrated target holds them, and a transfer replaces them
# with the source's rows so that ids referring to them (admin log entries, permission
# assignments) stay right.
MIGRATE_CREATED = (("contenttypes", "contenttype"), ("auth", "permission"))
MIGRATIONS_TABLE = MigrationRecorder.Migration._meta.db_table


@dataclass(frozen=True)
class Table:
    """One table: its model (for fields and conversions) and where it stands in the copy."""

    model: type[models.Model]

    @property
    def name(self) -> str:
        return self.model._meta.db_table

    @property
    def pk(self) -> models.Field:
        return self.model._meta.pk

    @cached_property
    def fields(self) -> list[models.Field]:
        """The concrete columns, primary key first."""
        concrete = [f for f in self.model._meta.concrete_fields if f.column]
        return [self.pk, *[f for f in concrete if f is not self.pk]]

    @property
    def migrate_created(self) -> bool:
        """True for tables whose rows `migrate` writes itself (a transfer replaces them)."""
        meta = self.model._meta
        return self.name == MIGRATIONS_TABLE or (meta.app_label, meta.model_name) in MIGRATE_CREATED

    def __str__(self) -> str:
        return self.name


def _concrete_models() -> list[type[models.Model]]:
    found: dict[str, type[models.Model]] = {}
    for model in apps.get_models(include_auto_created=True):
        meta = model._meta
        if meta.proxy or not meta.managed or meta.swapped:
            continue
        found.setdefault(meta.db_table, model)
    found.setdefault(MIGRATIONS_TABLE, MigrationRecorder.Migration)
    return list(found.values())


def dependency_order() -> list[Table]:
    """Every table, each after the tables its foreign keys point at (self-references ignored)."""
    models_by_table = {m._meta.db_table: m for m in _concrete_models()}
    depends: dict[str, set[str]] = {}
    for table, model in models_by_table.items():
        targets = {
            f.related_model._meta.db_table
            for f in model._meta.concrete_fields
            if isinstance(f.related_model, type)  # a relation, resolved to its model class
        }
        depends[table] = {t for t in targets if t != table and t in models_by_table}
    ordered: list[str] = []
    placed: set[str] = set()
    # Kahn's algorithm, alphabetical among the ready ones so the order is stable run to run.
    while len(ordered) < len(depends):
        ready = sorted(t for t, deps in depends.items() if t not in placed and deps <= placed)
        if not ready:
            stuck = sorted(t for t in depends if t not in placed)
            raise DependencyCycle(f"These tables reference each other in a cycle: {', '.join(stuck)}.")
        ordered.extend(ready)
        placed.update(ready)
    return [Table(models_by_table[t]) for t in ordered]


def existing_tables(connection: BaseDatabaseWrapper) -> set[str]:
    """Names of the tables present in a database."""
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))
