from django.apps import AppConfig


class NonatomicFixtureConfig(AppConfig):
    """A test-only app whose non-atomic migrations fail, hang or drop on demand (SONGSGEN_NA_*); never installed."""

    name = "tests.nonatomic_fixture"
    label = "nonatomic_fixture"
