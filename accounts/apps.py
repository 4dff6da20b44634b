from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """The custom user."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
