from django.apps import AppConfig


class QueueingConfig(AppConfig):
    """The generation queue and its worker."""

    name = "queueing"
    default_auto_field = "django.db.models.BigAutoField"
