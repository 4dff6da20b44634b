from django.apps import AppConfig


class SongsConfig(AppConfig):
    """Songs and the service that requests them."""

    name = "songs"
    default_auto_field = "django.db.models.BigAutoField"
