from django.apps import AppConfig


class MigrationsFixtureConfig(AppConfig):
    """A test-only app whose migrations fail on demand (SONGSGEN_FIXTURE_MODE); never installed in the project."""

    name = "tests.migrations_fixture"
    label = "migrations_fixture"
