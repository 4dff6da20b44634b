from django.apps import AppConfig


class OnlineFixtureConfig(AppConfig):
    """A test-only app whose migrations rebuild a table with rows, a child table and a view; never installed."""

    name = "tests.online_fixture"
    label = "online_fixture"
