from django.apps import AppConfig


class UnsafeFixtureConfig(AppConfig):
    """A test-only app with one deliberately unsafe migration on songs_song; never installed in the project."""

    name = "tests.unsafe_fixture"
    label = "unsafe_fixture"
