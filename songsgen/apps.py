from django.apps import AppConfig


class SongsgenConfig(AppConfig):
    """Project-wide database machinery and its commands."""

    name = "songsgen"
    verbose_name = "songsgen core"

    def ready(self) -> None:
        from django.core import checks

        from songsgen import checks as songsgen_checks
        from songsgen.db import sqlite

        sqlite.install()
        checks.register(songsgen_checks.check_secret_key, checks.Tags.security, deploy=True)
