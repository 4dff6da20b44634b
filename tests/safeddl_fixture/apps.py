from django.apps import AppConfig


class SafeddlFixtureConfig(AppConfig):
    """A test-only app whose 0002 is what makemigrations writes for an index, a CHECK, a unique constraint,
    NOT NULL on an existing column and foreign keys on a big table; never installed."""

    name = "tests.safeddl_fixture"
    label = "safeddl_fixture"
