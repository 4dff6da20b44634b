from django.apps import AppConfig


class SongsgenConfig(AppConfig):
    """Project-wide database machinery and its commands."""

    name = "songsgen"
    verbose_name = "songsgen core"

    def ready(self) -> None:
        from songsgen.db import sqlite

        sqlite.install()
