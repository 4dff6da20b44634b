"""Models holding each column type whose values differ in form between SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Sample(models.Model):
    """A row of awkward values: booleans, JSON, decimals, floats, datetimes with time zones, bytes, NULLs."""

    flag = models.BooleanField(default=False)
    maybe = models.BooleanField(null=True)
    payload = models.JSONField(null=True, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=4, null=True)
    ratio = models.FloatField(null=True)
    happened_at = models.DateTimeField(null=True)
    day = models.DateField(null=True)
    at = models.TimeField(null=True)
    span = models.DurationField(null=True)
    token = models.UUIDField(null=True)
    blob = models.BinaryField(null=True)
    text = models.TextField(blank=True, default="")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self) -> str:
        return f"sample {self.pk}"


class Hashed(models.Model):
    """Every column type the database hashes itself for the proof (songsgen.db.move.rowhash), keyed by a UUID."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    flag = models.BooleanField(default=False)
    maybe = models.BooleanField(null=True)
    payload = models.JSONField(null=True, blank=True)
    ratio = models.FloatField(null=True)
    happened_at = models.DateTimeField(null=True)
    day = models.DateField(null=True)
    at = models.TimeField(null=True)
    span = models.DurationField(null=True)
    blob = models.BinaryField(null=True)
    label = models.CharField(max_length=40, blank=True, default="")
    count = models.BigIntegerField(null=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self) -> str:
        return f"hashed {self.pk}"
