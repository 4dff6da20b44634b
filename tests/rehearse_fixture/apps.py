from django.apps import AppConfig


class RehearseFixtureConfig(AppConfig):
    """A test-only app whose data migrations reach the database every way people write them (for migrate
    subprocesses through tests/settings_rehearse.py; never installed in the project)."""

    name = "tests.rehearse_fixture"
    label = "rehearse_fixture"
