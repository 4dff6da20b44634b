"""A model's column fields by name, typed, for code that writes its own SQL.

`_meta.get_field` may answer a relation without a column; these refuse it instead.
"""

from __future__ import annotations

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models.fields.related import RelatedField


def concrete_field(model: type[models.Model], name: str) -> models.Field:
    """The field `name` of `model` that is stored in a column of its table."""
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or not field.concrete or not field.column:
        raise FieldDoesNotExist(f"{model._meta.label}.{name} is not stored in a column of its table.")
    return field


def column_of(model: type[models.Model], name: str) -> str:
    """The name of the column that stores the field `name` of `model`."""
    return concrete_field(model, name).column


def storage_field(field: models.Field) -> models.Field:
    """The field whose type stores `field`'s values: itself, or where its foreign keys lead."""
    # a foreign key to a foreign key: a one-to-one primary key
    while isinstance(field, RelatedField):
        field = field.target_field
    return field
