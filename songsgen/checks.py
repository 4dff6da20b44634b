"""System checks for the deployment settings that Django's own checks do not cover."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error
from django.core.exceptions import ImproperlyConfigured

MISSING_SECRET_KEY = (
    "SECRET_KEY is not set. Set the SECRET_KEY environment variable to a long random value "
    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'), or set DEBUG=1 for local development."
)


def secret_key_set() -> bool:
    """Whether a key is configured (Django raises on reading an empty one)."""
    try:
        return bool(settings.SECRET_KEY)
    except ImproperlyConfigured:
        return False


def check_secret_key(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """songsgen.E001 (`check --deploy`): no SECRET_KEY with DEBUG off. The WSGI application
    refuses too; tooling that signs nothing (makemigrations, migrate) runs without a key."""
    return [] if secret_key_set() else [Error(MISSING_SECRET_KEY, id="songsgen.E001")]
