"""WSGI entry point for songsgen."""

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "songsgen.settings")

application = get_wsgi_application()

# needs the apps loaded
from songsgen.checks import MISSING_SECRET_KEY, secret_key_set  # noqa: E402

if not secret_key_set():
    # A server process never runs the system checks: refuse here rather than on the first request.
    raise ImproperlyConfigured(MISSING_SECRET_KEY)
